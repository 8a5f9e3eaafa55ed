#!/usr/bin/env bash
# The flood and fault benchmark (benches/flood.py): hostile load on loopback while a member posts and
# reads info; prints one JSON line. Needs a release build (cargo build --release) and the test venv
# (tests/py/setup-venv.sh makes target/pyenv). FLOOD_SCENARIOS=baseline,bomb,... picks scenarios.
# Bounded: the whole run is killed after 12 minutes, with everything it started.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export MESHGROUP_BIN="$bin" E2E_BUDGET_SECS="${E2E_BUDGET_SECS:-660}"
# timeout signals its whole process group, so the server and the peers go too.
exec timeout --kill-after=15 720 "$py" "$root/benches/flood.py"
