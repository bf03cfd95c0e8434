import sys
from pathlib import Path

_HACK = str(Path(__file__).resolve().parents[2] / "hack")
if _HACK not in sys.path:  # until pytest's pythonpath = ["hack"] is configured
    sys.path.insert(0, _HACK)

# Same fixture functions as the plugin; the cluster itself is a per-process singleton, so
# registering localkube.pytest_plugin at the top level as well does not start a second one.
from localkube.pytest_plugin import k8s_api_client, k8s_namespace, local_cluster  # noqa: E402,F401
