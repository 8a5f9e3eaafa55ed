# Sourced by the bench wrappers (benches/fanout_e2e.sh, benches/flood.sh), which set -euo pipefail
# first. Sets root (the checkout), bin (MESHGROUP_BIN, default the release build: without it the
# wrapper exits 2) and py (the test venv's python, made by tests/py/setup-venv.sh if missing).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/target/pyenv/bin/python"
bin="${MESHGROUP_BIN:-$root/target/release/meshgroup}"
[ -x "$bin" ] || { echo "no $bin: run cargo build --release" >&2; exit 2; }
[ -x "$py" ] || py="$(bash "$root/tests/py/setup-venv.sh")"
