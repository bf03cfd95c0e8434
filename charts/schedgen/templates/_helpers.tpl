{{/* Names ------------------------------------------------------------------------ */}}
{{- define "schedgen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "schedgen.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "schedgen.operatorName" -}}{{ include "schedgen.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "schedgen.apiName" -}}{{ include "schedgen.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end -}}
{{- define "schedgen.runnerName" -}}{{ include "schedgen.fullname" . | trunc 56 | trimSuffix "-" }}-runner{{- end -}}
{{- define "schedgen.peeringName" -}}{{ default (include "schedgen.fullname" .) .Values.operator.peeringName }}{{- end -}}

{{/* Labels ----------------------------------------------------------------------- */}}
{{- define "schedgen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "schedgen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: schedgen
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "schedgen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "schedgen.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images ----------------------------------------------------------------------- */}}
{{- define "schedgen.image" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "schedgen.operatorImage" -}}
{{- include "schedgen.image" (dict "image" .Values.operator.image "root" .) -}}
{{- end -}}
{{- define "schedgen.runnerImage" -}}
{{- include "schedgen.image" (dict "image" .Values.runner.image "root" .) -}}
{{- end -}}
{{- /* runner.imagePullSecrets as a JSON list of names (the operator's environment, the
       runner Job policy): ["regcred"] */ -}}
{{- define "schedgen.runnerPullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.runner.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- $names | toJson -}}
{{- end -}}
{{- define "schedgen.apiImage" -}}
{{- if .Values.api.image.repository -}}
{{- include "schedgen.image" (dict "image" .Values.api.image "root" .) -}}
{{- else -}}
{{- include "schedgen.operatorImage" . -}}
{{- end -}}
{{- end -}}

{{/* Watch scope ------------------------------------------------------------------ */}}
{{- define "schedgen.namespaced" -}}
{{- if .Values.watch.namespaces -}}true{{- end -}}
{{- end -}}

{{/* The namespaces served in namespace-scoped mode, release namespace included (JSON list). */}}
{{- define "schedgen.watchNamespaces" -}}
{{- $list := list -}}
{{- range .Values.watch.namespaces }}{{ $list = append $list . }}{{ end -}}
{{- $list = append $list .Release.Namespace -}}
{{- if .Values.api.enabled }}{{ $list = append $list (include "schedgen.apiNamespace" .) }}{{ end -}}
{{- $list | uniq | toJson -}}
{{- end -}}

{{/* The namespace the API creates ParseJobs in (default: the release namespace). */}}
{{- define "schedgen.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace -}}
{{- end -}}

{{/* Where runner pods can run: the served namespaces, or the configured list. */}}
{{- define "schedgen.runnerNamespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- include "schedgen.watchNamespaces" . -}}
{{- else -}}
{{- $list := list -}}
{{- range .Values.networkPolicy.runnerNamespaces }}{{ $list = append $list . }}{{ end -}}
{{- $list = append $list .Release.Namespace -}}
{{- if .Values.api.enabled }}{{ $list = append $list (include "schedgen.apiNamespace" .) }}{{ end -}}
{{- $list | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/* PriorityClass names per ParseJob priority: "high=x,normal=y,low=z" or "". */}}
{{- define "schedgen.priorityClasses" -}}
{{- if .Values.priorityClasses.create -}}
{{- $f := include "schedgen.fullname" . -}}
high={{ $f }}-high,normal={{ $f }}-normal,low={{ $f }}-low
{{- end -}}
{{- end -}}

{{/* "k=v,k2=v2" from a map (sorted keys). */}}
{{- define "schedgen.pairs" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod and container level. */}}
{{- define "schedgen.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "schedgen.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* RBAC rules ------------------------------------------------------------------- */}}
{{- define "schedgen.operatorServedRules" -}}
- apiGroups: [schedgen.io]
  resources: [parsejobs]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [schedgen.io]
  resources: [parsejobs/status]
  verbs: [patch]
- apiGroups: [schedgen.io]
  resources: [parsejobs/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch]
{{- end -}}

{{/* The API may only create and read ParseJobs, in the served namespaces. */}}
{{- define "schedgen.apiRules" -}}
- apiGroups: [schedgen.io]
  resources: [parsejobs]
  # delete: DELETE /api/v1/jobs/{id} (cancel and erase one of the caller's jobs; the
  # operator's finalizer ends it first). No update/patch: spec and status are not the API's.
  verbs: [create, get, list, watch, delete]
# list: GET /api/v1/jobs/{id}/log (`schedgen logs`) reads the Events about one of the
# caller's ParseJobs (a field selector on its uid). Read only, this namespace only.
- apiGroups: [""]
  resources: [events]
  verbs: [list]
{{- end -}}

{{/* The Secret holding each role's Postgres DSN ("" = none): per-role, else the shared one. */}}
{{- define "schedgen.operatorDsnSecret" -}}{{ default .Values.postgres.existingSecret .Values.postgres.operatorSecret }}{{- end -}}
{{- define "schedgen.apiDsnSecret" -}}{{ default .Values.postgres.existingSecret .Values.postgres.apiSecret }}{{- end -}}
{{- define "schedgen.migrationDsnSecret" -}}{{ default .Values.postgres.existingSecret .Values.postgres.migrationSecret }}{{- end -}}

{{/* The Secret holding each component's S3 keys ("" = none, ambient credentials): its own, else the shared one. */}}
{{- define "schedgen.operatorS3Secret" -}}{{ default .Values.s3.existingSecret .Values.s3.operatorSecret }}{{- end -}}
{{- define "schedgen.apiS3Secret" -}}{{ default .Values.s3.existingSecret .Values.s3.apiSecret }}{{- end -}}

{{/* Getting started: the public address, spread, keys -------------------------------- */}}
{{/* Base of the API's feed URLs: api.publicUrl, else the Ingress host (https with TLS),
     else the HTTPRoute's first hostname (https: TLS is the Gateway's), else "" (each
     request's own scheme and host). */}}
{{- define "schedgen.apiPublicUrl" -}}
{{- $a := .Values.api -}}
{{- if $a.publicUrl -}}
{{- $a.publicUrl -}}
{{- else if and $a.ingress.enabled $a.ingress.host -}}
{{- ternary "https" "http" (not (empty $a.ingress.tls.secretName)) }}://{{ $a.ingress.host -}}
{{- else if and $a.httpRoute.enabled $a.httpRoute.hostnames -}}
https://{{ first $a.httpRoute.hostnames -}}
{{- end -}}
{{- end -}}

{{/* topologySpreadConstraints with the component's labelSelector where one has none.
     Args: root, component, constraints. */}}
{{- define "schedgen.topologySpread" -}}
{{- $selector := include "schedgen.selectorLabels" (dict "root" .root "component" .component) | fromYaml -}}
{{- $out := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The Secret with a key administrator's DSN for `schedgen-api add-key` ("" = none). */}}
{{- define "schedgen.keyAdminDsnSecret" -}}{{ default (include "schedgen.migrationDsnSecret" .) .Values.postgres.keyAdminSecret }}{{- end -}}

{{/* The Secret holding the API key `helm test` uploads with (never created by the chart). */}}
{{- define "schedgen.testKeySecret" -}}{{ default (printf "%s-test-api-key" (include "schedgen.fullname" . | trunc 50 | trimSuffix "-")) .Values.tests.apiKeySecret }}{{- end -}}

{{/* NOTES: the pod `kubectl run ... add-key` overrides (strategic merge): restricted, no
     token, the key administrator's DSN by reference. Args: root, secret. */}}
{{- define "schedgen.notes.addKeyOverrides" -}}
{{- $root := .root -}}
{{- $name := printf "%s-add-key" (include "schedgen.fullname" $root | trunc 50 | trimSuffix "-") -}}
{{- $env := list (dict "name" "SCHEDGEN_DATABASE_URL" "valueFrom" (dict "secretKeyRef" (dict "name" .secret "key" $root.Values.postgres.dsnKey))) -}}
{{- $container := dict "name" $name "env" $env "securityContext" (include "schedgen.containerSecurityContext" $root | fromYaml) -}}
{{- $spec := dict "automountServiceAccountToken" false "enableServiceLinks" false "securityContext" (include "schedgen.podSecurityContext" $root | fromYaml) "containers" (list $container) -}}
{{- with $root.Values.operator.imagePullSecrets }}{{ $_ := set $spec "imagePullSecrets" . }}{{ end -}}
{{- dict "apiVersion" "v1" "spec" $spec | toJson -}}
{{- end -}}
