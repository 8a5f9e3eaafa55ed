#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned reference peers used by the interop tests.
# Usage: tests/py/setup-venv.sh [VENV_DIR]   (default: target/pyenv). Prints the python path.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$here/target/pyenv}
stamp="$venv/.pinned-rns-1.5.7-lxmf-1.2.1"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check rns==1.5.7 lxmf==1.2.1 >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
