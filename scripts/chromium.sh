# Sourced by scripts/test: Debian's chromium for the browser tests (Playwright drives it; no
# browser download from Playwright). Exports NATCHET_CHROMIUM, the browser's path.
#
# Missing, it is installed: as root (or with password-less sudo) through apt-get, with no
# question asked and stdin closed (`apt-get update` once, then `apt-get install -y
# chromium`); present, nothing is installed. Still missing with CI=true, this fails: CI must
# never skip the browser tests. Elsewhere the tests skip, saying why.
find_chromium() {
  if [ -n "${NATCHET_CHROMIUM:-}" ] && [ -x "$NATCHET_CHROMIUM" ]; then
    echo "$NATCHET_CHROMIUM"
    return
  fi
  command -v chromium || command -v chromium-browser || true
}
chromium_path="$(find_chromium)"
if [ -z "$chromium_path" ] && command -v apt-get >/dev/null; then
  as_root=()
  if [ "$(id -u)" -ne 0 ] && sudo -n true 2>/dev/null; then as_root=(sudo -n); fi
  if [ "$(id -u)" -eq 0 ] || [ ${#as_root[@]} -gt 0 ]; then
    echo "== installing chromium for the browser tests (apt-get) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq </dev/null >&2
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium </dev/null >&2
    chromium_path="$(find_chromium)"
  fi
fi
if [ -n "$chromium_path" ]; then
  export NATCHET_CHROMIUM="$chromium_path"
elif [ "${CI:-}" = "true" ]; then
  echo "natchet: chromium not found and could not be installed (need root or sudo and" \
    "apt-get); CI must run the browser tests: install Debian's chromium or set" \
    "NATCHET_CHROMIUM" >&2
  exit 1
else
  echo "natchet: chromium not found (not root, or no apt-get): tests/browser will skip." \
    "Install Debian's chromium, or set NATCHET_CHROMIUM to a Chromium binary." >&2
fi
unset chromium_path as_root
