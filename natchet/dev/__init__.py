"""natchet on one machine, for development and demos.

* :mod:`natchet.dev.embedded`: ``nats-server`` and PostgreSQL from their wheels, on free ports.
* :mod:`natchet.dev.stack`: both in a data directory (:class:`DevStack`), one stack per
  directory (:mod:`natchet.dev.lock`).
* :mod:`natchet.dev.tenancy`: the embedded server's tenancy config and the dev tenant's token.
* :mod:`natchet.dev.serve`: the stack and the engine on it as one async context.
* :mod:`natchet.dev.demo`: the whole path, events in and runs out, on a throwaway stack.

Nothing here handles signals or exits the process: that is the CLI's (``natchet.cli``).
"""
