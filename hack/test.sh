#!/usr/bin/env bash
# Set up (hack/setup.sh) and run every test. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
hack/setup.sh
printf '\n==> [%s] running the tests\n' "$(date +%H:%M:%S)"
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
