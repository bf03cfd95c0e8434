#!/usr/bin/env bash
# The user's path on a machine with Docker: a kind cluster running the chart with the
# real images, MinIO and Postgres, and the real PDFs parsed end to end.
#
#   hack/kind-up.sh            # create (or reuse) the cluster, build, load, install, submit
#   hack/kind-up.sh --down     # delete the cluster
#
# Needs: docker (with buildx/BuildKit), kind, kubectl, helm (v3.8+ or v4). Environment:
#   KIND_CLUSTER (schedgen)  NAMESPACE (schedgen-system)  TAG (dev)
#   PDF_DIR (../shared/fixtures/up)  SKIP_BUILD=1 (reuse images already loaded)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-schedgen}"
NS="${NAMESPACE:-schedgen-system}"
TAG="${TAG:-dev}"
PDF_DIR="${PDF_DIR:-$ROOT/../shared/fixtures/up}"
KUBECTL=(kubectl --context "kind-$CLUSTER")
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

if [ "${1:-}" = "--down" ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

step "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi

if [ -z "${SKIP_BUILD:-}" ]; then
  step "building images (tag $TAG)"
  DOCKER_BUILDKIT=1 docker build -f Dockerfile.operator -t "schedgen-operator:$TAG" .
  DOCKER_BUILDKIT=1 docker build -f Dockerfile.runner -t "schedgen-runner:$TAG" .
fi
step "loading images into kind"
kind load docker-image --name "$CLUSTER" "schedgen-operator:$TAG" "schedgen-runner:$TAG"

step "namespace $NS (Pod Security: restricted) with dev MinIO and Postgres"
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
"${KUBECTL[@]}" label namespace "$NS" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
# Dev-only credentials, generated per cluster and kept in Secrets (never in values).
if ! "${KUBECTL[@]}" -n "$NS" get secret schedgen-runner >/dev/null 2>&1; then
  S3_KEY="schedgen"; S3_SECRET="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  PG_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  DSN="postgresql://schedgen:$PG_PASSWORD@postgres.$NS.svc:5432/schedgen"
  "${KUBECTL[@]}" -n "$NS" create secret generic schedgen-dev-services \
    --from-literal=MINIO_ROOT_USER="$S3_KEY" --from-literal=MINIO_ROOT_PASSWORD="$S3_SECRET" \
    --from-literal=POSTGRES_PASSWORD="$PG_PASSWORD"
  for name in schedgen-runner schedgen-s3 schedgen-postgres; do
    "${KUBECTL[@]}" -n "$NS" create secret generic "$name" \
      --from-literal=AWS_ACCESS_KEY_ID="$S3_KEY" --from-literal=AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
      --from-literal=SCHEDGEN_DATABASE_URL="$DSN"
  done
fi
"${KUBECTL[@]}" -n "$NS" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: minio
          image: quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z
          args: [server, /data]
          envFrom: [{secretRef: {name: schedgen-dev-services}}]
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio}
spec: {selector: {app: minio}, ports: [{port: 9000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 999, fsGroup: 999, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: postgres
          image: postgres:16-bookworm
          env:
            - {name: POSTGRES_USER, value: schedgen}
            - {name: POSTGRES_DB, value: schedgen}
            - {name: PGDATA, value: /var/lib/postgresql/data/pgdata}
            - name: POSTGRES_PASSWORD
              valueFrom: {secretKeyRef: {name: schedgen-dev-services, key: POSTGRES_PASSWORD}}
          ports: [{containerPort: 5432}]
          readinessProbe: {exec: {command: [pg_isready, -U, schedgen]}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}, {name: run, mountPath: /var/run/postgresql}]
      volumes: [{name: data, emptyDir: {}}, {name: run, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec: {selector: {app: postgres}, ports: [{port: 5432}]}
YAML
"${KUBECTL[@]}" -n "$NS" rollout status deploy/minio deploy/postgres --timeout=180s

step "bucket schedgen-uploads and the real PDFs in MinIO"
"${KUBECTL[@]}" -n "$NS" delete pod mc --ignore-not-found >/dev/null
"${KUBECTL[@]}" -n "$NS" run mc --restart=Never --image=quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z \
  --overrides='{"spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":1000,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"mc","image":"quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z","command":["sleep","600"],"env":[{"name":"HOME","value":"/tmp"},{"name":"MC_CONFIG_DIR","value":"/tmp/.mc"}],"envFrom":[{"secretRef":{"name":"schedgen-dev-services"}}],"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}'
"${KUBECTL[@]}" -n "$NS" wait --for=condition=Ready pod/mc --timeout=120s
"${KUBECTL[@]}" -n "$NS" exec mc -- sh -c \
  'mc alias set dev http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null && mc mb -p dev/schedgen-uploads'
for pdf in "$PDF_DIR"/*.pdf; do
  "${KUBECTL[@]}" -n "$NS" cp "$pdf" "mc:/tmp/$(basename "$pdf")"
  "${KUBECTL[@]}" -n "$NS" exec mc -- mc cp "/tmp/$(basename "$pdf")" "dev/schedgen-uploads/uploads/namespaces/$NS/$(basename "$pdf")"
done
"${KUBECTL[@]}" -n "$NS" delete pod mc --wait=false

step "helm install schedgen (dev values)"
helm --kube-context "kind-$CLUSTER" upgrade --install schedgen charts/schedgen -n "$NS" --wait --timeout 5m \
  --set operator.image.tag="$TAG" --set runner.image.tag="$TAG" \
  --set s3.endpointUrl="http://minio.$NS.svc:9000" --set s3.existingSecret=schedgen-s3 \
  --set postgres.existingSecret=schedgen-postgres \
  --set networkPolicy.s3.ports[0].port=9000 \
  --set networkPolicy.s3.to[0].namespaceSelector.matchLabels."kubernetes\.io/metadata\.name"="$NS" \
  --set networkPolicy.s3.to[0].podSelector.matchLabels.app=minio \
  --set queue.guardMaxUnschedulable=-1

step "submitting the real PDFs as ParseJobs (each under its namespace's own prefix: the source policy)"
for pdf in "$PDF_DIR"/*.pdf; do
  name="$(basename "$pdf" .pdf | tr 'A-Z_' 'a-z-')"
  cat <<YAML | "${KUBECTL[@]}" -n "$NS" apply -f -
apiVersion: schedgen.io/v1alpha1
kind: ParseJob
metadata: {name: $name}
spec:
  source: {s3: {key: uploads/namespaces/$NS/$(basename "$pdf")}}
YAML
done
for pdf in "$PDF_DIR"/*.pdf; do
  name="$(basename "$pdf" .pdf | tr 'A-Z_' 'a-z-')"
  "${KUBECTL[@]}" -n "$NS" wait "pj/$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s
done
"${KUBECTL[@]}" -n "$NS" get pj
step "done. API: kubectl -n $NS port-forward svc/schedgen-api 8000:80, then POST /api/v1/uploads"
