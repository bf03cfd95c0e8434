"""Chart tests: offline rendering/lint/schema (always), and install + end to end on the
real local control plane (hack/localkube; marked `cluster`)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
_HACK = str(Path(__file__).resolve().parents[2] / "hack")
if _HACK not in sys.path:
    sys.path.insert(0, _HACK)

try:  # same fixture functions as tests/cluster/conftest.py (one cluster per process)
    from localkube.pytest_plugin import k8s_api_client, local_cluster  # noqa: F401
except ImportError:
    pass
