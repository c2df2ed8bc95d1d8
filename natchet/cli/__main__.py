"""``python -m natchet.cli``: the ``natchet`` command."""

from __future__ import annotations

import sys

from natchet.cli import main

sys.exit(main())
