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
{{- define "modelplane.job.gateway" -}}modelplane-gateway{{- end }}

{{/* The gateway's names, labels and image (empty image fields take the operator's). */}}
{{- define "modelplane.gateway.fullname" -}}
{{- printf "%s-gateway" (include "modelplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelplane.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "modelplane.gateway.labels" -}}
{{ include "modelplane.labels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "modelplane.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "modelplane.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelplane.gateway.image" -}}
{{- $repository := default .Values.operator.image.repository .Values.gateway.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.operator.image.tag) .Values.gateway.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/*
RBAC rules from a rules file (files/*-rbac-rules.yaml), split by scope, as JSON:
{"namespaced": [...], "cluster": [...]}. A rule is cluster-scoped when every
resource it names is; those have no effect in a namespaced Role.
Call with (dict "root" $ "file" "files/NAME.yaml").
*/}}
{{- define "modelplane.rbac.rulesByScope" -}}
{{- $clusterScoped := list "customresourcedefinitions" "namespaces" "nodes" "persistentvolumes" "storageclasses" "clusterroles" "clusterrolebindings" "priorityclasses" "runtimeclasses" "ingressclasses" "clusterkopfpeerings" "apiservices" "csidrivers" "csinodes" "volumeattachments" "certificatesigningrequests" "mutatingwebhookconfigurations" "validatingwebhookconfigurations" }}
{{- $out := dict "namespaced" (list) "cluster" (list) }}
{{- range (.root.Files.Get .file | fromYamlArray) }}
{{- $cluster := true }}
{{- range .resources }}
{{- if not (has (first (splitList "/" .)) $clusterScoped) }}{{ $cluster = false }}{{ end }}
{{- end }}
{{- if $cluster }}
{{- $_ := set $out "cluster" (append $out.cluster .) }}
{{- else }}
{{- $_ := set $out "namespaced" (append $out.namespaced .) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The operator's config file: operator.config, plus what the chart decides
(watched namespaces, liveness port, the control-plane namespace its NetworkPolicies
admit the operator and gateway from) and monitoring.labels on its ServiceMonitors.
*/}}
{{- define "modelplane.operator.configFile" -}}
{{- $config := deepCopy .Values.operator.config }}
{{- if hasKey $config "namespaces" }}
{{- fail "operator.config.namespaces is set by the chart: use operator.watchNamespaces (it also scopes the RBAC)" }}
{{- end }}
{{- if hasKey $config "healthPort" }}
{{- fail "operator.config.healthPort is set by the chart: use operator.healthPort" }}
{{- end }}
{{- if eq (int .Values.operator.healthPort) (int (default 8080 $config.metricsPort)) }}
{{- fail (printf "operator.healthPort %d is also operator.config.metricsPort: give them different ports" (int .Values.operator.healthPort)) }}
{{- end }}
{{- $networkPolicy := default dict $config.networkPolicy }}
{{- if hasKey $networkPolicy "controlPlaneNamespace" }}
{{- fail "operator.config.networkPolicy.controlPlaneNamespace is set by the chart: the release namespace, where the operator and the gateway run" }}
{{- end }}
{{- $_ := set $networkPolicy "controlPlaneNamespace" .Release.Namespace }}
{{- $_ := set $config "networkPolicy" $networkPolicy }}
{{- $_ := set $config "namespaces" .Values.operator.watchNamespaces }}
{{- $_ := set $config "healthPort" .Values.operator.healthPort }}
{{- $labels := merge (deepCopy (default dict $config.serviceMonitorLabels)) .Values.monitoring.labels }}
{{- $_ := set $config "serviceMonitorLabels" $labels }}
{{- toYaml $config }}
{{- end }}
