#!/usr/bin/env bash
# End to end over loopback: one post to N (default 1,000) real Python LXMF members; prints one JSON line.
# Needs a release build (cargo build --release) and the test venv (tests/py/setup-venv.sh makes
# target/pyenv). Bounded: the whole run is killed after 5 minutes, with everything it started.
set -euo pipefail
. "$(dirname "$0")/common.sh"
# timeout signals its whole process group, so the server and the peer go too.
exec timeout --kill-after=15 300 "$py" "$root/benches/fanout_e2e.py" "${1:-1000}"
