{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name, plus the chart name unless the release name contains it.
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) are named after it, so two releases never
share one.
*/}}
{{- define "ferrolb.fullname" -}}
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

{{/*
Name of the controller's objects (Deployment, ServiceAccount, roles and bindings).
*/}}
{{- define "ferrolb.controller.fullname" -}}
{{- printf "%s-controller" (include "ferrolb.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}

{{/*
The Lease the controller replicas elect a leader with. The Deployment's --lease-name and the
Role's resourceNames both come from here so they cannot drift apart.
*/}}
{{- define "ferrolb.controller.leaseName" -}}
ferrolb-controller
{{- end }}

{{- define "ferrolb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferrolb.labels" -}}
helm.sh/chart: {{ include "ferrolb.chart" . }}
{{ include "ferrolb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferrolb.controller.labels" -}}
{{ include "ferrolb.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "ferrolb.controller.selectorLabels" -}}
{{ include "ferrolb.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Container image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "ferrolb.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Name of the speaker's objects (DaemonSet, ServiceAccount, ClusterRole and binding).
*/}}
{{- define "ferrolb.speaker.fullname" -}}
{{- printf "%s-speaker" (include "ferrolb.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "ferrolb.speaker.labels" -}}
{{ include "ferrolb.labels" . }}
app.kubernetes.io/component: speaker
{{- end }}

{{- define "ferrolb.speaker.selectorLabels" -}}
{{ include "ferrolb.selectorLabels" . }}
app.kubernetes.io/component: speaker
{{- end }}

{{/*
The Secret holding the speakers' memberlist key: speaker.memberlist.existingSecret, or the one
the chart generates.
*/}}
{{- define "ferrolb.speaker.memberlistSecret" -}}
{{- .Values.speaker.memberlist.existingSecret | default (printf "%s-memberlist" (include "ferrolb.speaker.fullname" .)) }}
{{- end }}

{{/*
Speaker image: speaker.image overrides the shared image field by field.
*/}}
{{- define "ferrolb.speaker.image" -}}
{{- $repository := .Values.speaker.image.repository | default .Values.image.repository }}
{{- $tag := .Values.speaker.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" $repository ($tag | toString) }}
{{- end }}

{{/*
Arguments serving /metrics over HTTPS on port `.port` (when metrics.secure), one per line.
Call with (dict "root" $ "port" <port>).
*/}}
{{- define "ferrolb.metrics.args" -}}
{{- if .root.Values.metrics.secure }}
- --secure-metrics-addr=0.0.0.0:{{ .port }}
{{- if .root.Values.metrics.tlsSecret }}
- --metrics-tls-cert-file=/etc/ferrolb/metrics-tls/tls.crt
- --metrics-tls-key-file=/etc/ferrolb/metrics-tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/*
The container port of the HTTPS /metrics (when metrics.secure). Call with (dict "root" $ "port" <port>).
*/}}
{{- define "ferrolb.metrics.port" -}}
{{- if .root.Values.metrics.secure }}
- name: metrics
  containerPort: {{ .port }}
  protocol: TCP
{{- end }}
{{- end }}

{{/*
The mount and the volume of metrics.tlsSecret, if set.
*/}}
{{- define "ferrolb.metrics.tlsMount" -}}
{{- if and .Values.metrics.secure .Values.metrics.tlsSecret }}
- name: metrics-tls
  mountPath: /etc/ferrolb/metrics-tls
  readOnly: true
{{- end }}
{{- end }}
{{- define "ferrolb.metrics.tlsVolume" -}}
{{- if and .Values.metrics.secure .Values.metrics.tlsSecret }}
- name: metrics-tls
  secret:
    secretName: {{ .Values.metrics.tlsSecret }}
    defaultMode: 256
{{- end }}
{{- end }}

{{/*
The ClusterRole rules that let a component check /metrics callers (when metrics.secure).
*/}}
{{- define "ferrolb.metrics.reviewRules" -}}
{{- if .Values.metrics.secure }}
# /metrics callers' tokens (TokenReview) and their right to get /metrics (SubjectAccessReview).
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- end }}
{{- end }}

{{/*
Name of the ClusterRole that grants get on /metrics, and of the scraper ServiceAccount.
*/}}
{{- define "ferrolb.metrics.readerName" -}}
{{- printf "%s-metrics-reader" (include "ferrolb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "ferrolb.metrics.scraperName" -}}
{{- printf "%s-metrics-scraper" (include "ferrolb.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

