#!/usr/bin/env bash
# What the browser test (tests/test_browser.py) needs from the system: Debian's Chromium and a font
# so that pages show text. Installed only when missing (a warm machine skips this in a blink); a
# failed install stops `make test` here with the reason, rather than a skipped test later.
set -euo pipefail
needed=()
for package in chromium fonts-dejavu-core; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || needed+=("$package")
done
[ ${#needed[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "make test: error: the browser test needs ${needed[*]}: run 'sudo apt-get install -y ${needed[*]}' once" >&2
    exit 1
fi
echo "make test: installing ${needed[*]} for the browser test"
log=$(mktemp)
{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${needed[@]}"; } >"$log" 2>&1 \
    || { tail -20 "$log" >&2; echo "make test: error: apt-get could not install ${needed[*]}" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
