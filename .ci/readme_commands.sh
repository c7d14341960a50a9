#!/usr/bin/env bash
# The README's set-up commands, verbatim, in a fresh virtual environment (no site packages).
#
#   .ci/readme_commands.sh            both lines: install + train the sample, then the test command
#   .ci/readme_commands.sh --first    only the first line (about a minute: the newcomer's path)
#
# The commands are read from the first ```bash block under "## Set up" in README.md, so what is
# run is what a reader copies. Each line runs with bash -e in the checkout, the venv activated.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t commands < <(python3 - <<'PY'
import re, sys
text = open("README.md", encoding="utf-8").read()
m = re.search(r"^## Set up\s*$.*?^```bash\n(.*?)^```", text, re.S | re.M)
if not m:
    sys.exit("README.md: no ```bash block under '## Set up'")
print("\n".join(line for line in m.group(1).splitlines() if line.strip()))
PY
)
if [ "${#commands[@]}" -ne 2 ]; then
    echo "README.md: expected the two set-up commands, found ${#commands[@]}" >&2
    exit 2
fi
[ "${1:-}" = "--first" ] && commands=("${commands[0]}")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
for cmd in "${commands[@]}"; do
    echo "+ $cmd"
    start=$SECONDS
    bash -e -o pipefail -c "$cmd"
    echo "  (ok, $((SECONDS - start)) s)"
done
