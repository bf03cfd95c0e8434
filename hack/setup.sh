#!/usr/bin/env bash
# Set up a fresh machine for schedgen (idempotent; a second run reuses everything):
#   1. Debian packages: PostgreSQL server (the real one the tests and demo start); containerd,
#      runc, CNI plugins, iptables, conntrack, busybox-static, gcc for the cluster's real nodes.
#   2. .venv/ with the project and its test dependencies.
#   3. The local Kubernetes control plane binaries, built once from the Go module
#      proxy into ~/.cache/schedgen/ (8 to 25 minutes on 2 cores the first time), kwok
#      (simulated nodes, about 2 minutes more), kube-network-policies (the NetworkPolicy
#      enforcer of the real nodes, about 3.5 minutes more) and Karpenter v1.15.0's KWOK provider
#      (the autoscaler of docs/autoscaling.md; Go 1.26.9 via GOTOOLCHAIN, about 2 minutes more) and
#      the OCI registry CNCF distribution v3.1.2 (hack/localkube/registry.py, 2 to 7 minutes more).
#   4. MinIO, the S3 server of the tests and the demo, also from the Go module proxy
#      (about 2 to 4 minutes the first time); prometheus + promtool likewise (hack/promserver.py,
#      8 to 15 minutes the first time), for the alert rule tests and the Prometheus e2e.
#   5. The project's images (hack/images build all: runner, operator (+API), pause; podman,
#      cached by content), which the tests and the demo import into the cluster's nodes.
# hack/setup.sh --demo (what hack/demo.sh runs) sets up only what the demo runs: no kwok, no
# prometheus/promtool, no Chromium (those are the tests').
set -euo pipefail
DEMO=0
case "${1:-}" in
  --demo) DEMO=1 ;;
  "") ;;
  *) echo "usage: hack/setup.sh [--demo]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Go is preinstalled on these machines, not always on a non-interactive PATH.
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  step "installing PostgreSQL (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  # The package starts a cluster of its own; the project runs its own servers.
  service postgresql stop >/dev/null 2>&1 || true
fi

# Real nodes of the local cluster (hack/localkube, docs/local-cluster.md): containerd + runc +
# CNI plugins, iptables/conntrack for kube-proxy, iproute2/nsenter for the node network, and
# busybox-static + gcc/libc6-dev for the pause and test images.
NODE_PKGS="containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux busybox-static gcc libc6-dev"
# The images (hack/images): podman/buildah, rootless-capable storage, mmdebstrap for the base.
NODE_PKGS="$NODE_PKGS podman buildah mmdebstrap uidmap fuse-overlayfs"
# The web page's browser test (tests/cli/test_web_page.py): headless Chromium and its driver.
[ "$DEMO" = 1 ] || NODE_PKGS="$NODE_PKGS chromium chromium-driver"
missing=""
for p in $NODE_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  step "installing Debian packages for the cluster nodes:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
  # Each node runs a containerd of its own; the package's system one is not used.
  service containerd stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ requirements-dev.txt -nt .venv/.installed ] \
   || [ pyproject.toml -nt .venv/.installed ]; then
  step "installing Python packages into .venv (requirements-dev.txt: pinned, hash-checked)"
  .venv/bin/pip install -q --upgrade pip
  # The lock files come from pyproject.toml (`hack/images lock`); the images use the same pins.
  .venv/bin/pip install -q --require-hashes --only-binary=:all: -r requirements-dev.txt -r requirements-build.txt
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
  touch .venv/.installed
fi

if [ "$DEMO" = 1 ]; then
  step "building or reusing the local Kubernetes binaries and kube-network-policies"
  hack/cluster build --no-kwok
else
  step "building or reusing the local Kubernetes binaries, kwok, kube-network-policies, Karpenter (KWOK provider) and the registry"
  hack/cluster build
fi
step "building or reusing the S3 server (MinIO, from the Go module proxy)"
.venv/bin/python hack/devservices.py build
if [ "$DEMO" = 0 ]; then
  step "building or reusing prometheus and promtool (the observability tests; Go module proxy)"
  .venv/bin/python hack/promserver.py build
fi
step "building or reusing the images (hack/images build all)"
hack/images build all
step "setup done"
