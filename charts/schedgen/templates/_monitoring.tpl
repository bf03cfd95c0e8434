{{/* Monitoring switches: true, false, or "auto" = on when the cluster serves the Prometheus
Operator's API (monitoring.coreos.com/v1). Call with (dict "root" $ "value" .Values.x.enabled);
yields "true" or "". */}}
{{- define "schedgen.monitoringOn" -}}
{{- if eq (toString .value) "auto" -}}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- else if .value -}}true{{- end -}}
{{- end -}}
