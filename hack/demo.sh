#!/usr/bin/env bash
# The main job: set up (hack/setup.sh) and run the local demo stack with the real PDFs.
#   hack/demo.sh [up|status|down]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-up}" = "up" ]; then hack/setup.sh; fi
exec .venv/bin/python hack/demo.py "$@"
