{{/*
Names and labels shared by every template. Label keys and values that other
parts of Modelplane select by come from server/modelplane/api/contract.py
(tests/chart checks the rendered objects against it).
*/}}

{{- define "modelplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object: Kubernetes' recommended ones plus commonLabels. */}}
{{- define "modelplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector of the operator's pods (stable across upgrades: no version). */}}
{{- define "modelplane.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelplane.operator.labels" -}}
{{ include "modelplane.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelplane.operator.fullname" -}}
{{- printf "%s-operator" (include "modelplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "modelplane.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelplane.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{/*
Labels of the monitoring objects (PodMonitor, ServiceMonitor, PrometheusRule):
the common ones plus monitoring.labels, which a Prometheus Operator may select by.
*/}}
{{- define "modelplane.monitoring.labels" -}}
{{ include "modelplane.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The `job` label of the scraped series. The alerts (files/alerts.yaml) and the
Operator dashboard select by these values, so they are not configurable.
*/}}
{{- define "modelplane.job.modelServer" -}}modelplane-model-server{{- end }}
{{- define "modelplane.job.operator" -}}modelplane-operator{{- end }}
