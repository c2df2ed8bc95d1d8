"""The web dashboard and its JSON API (issue 12): :func:`natchet.dashboard.app.create_app`
builds it, :func:`natchet.dashboard.app.serve` runs it inside the caller's asyncio loop."""
