#!/usr/bin/env bash
# The main job: set up what the demo runs (hack/setup.sh --demo) and run the local demo stack
# with the real PDFs.
#   hack/demo.sh [up|status|down]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-up}" = "up" ]; then hack/setup.sh --demo; fi
exec .venv/bin/python hack/demo.py "$@"
