{{/* Names, labels and the few values the templates compute. */}}

{{- define "promo-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, unless the release name already contains the chart name. */}}
{{- define "promo-bridge.fullname" -}}
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

{{- define "promo-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "promo-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promo-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "promo-bridge.labels" -}}
helm.sh/chart: {{ include "promo-bridge.chart" . }}
{{ include "promo-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: consumer
{{- end }}

{{- define "promo-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "promo-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A digest pins the exact image; otherwise the tag, defaulting to the chart's appVersion. */}}
{{- define "promo-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding rules.yaml: the operator's own, or the one this chart renders. */}}
{{- define "promo-bridge.rulesConfigMapName" -}}
{{- if .Values.rulesConfigMap.existingName }}
{{- .Values.rulesConfigMap.existingName }}
{{- else }}
{{- printf "%s-rules" (include "promo-bridge.fullname" .) }}
{{- end }}
{{- end }}

{{- define "promo-bridge.rulesKey" -}}
{{- if .Values.rulesConfigMap.existingName }}
{{- .Values.rulesConfigMap.key }}
{{- else }}
{{- "rules.yaml" }}
{{- end }}
{{- end }}

{{/*
The kubelet must wait for the whole drain (bounded by drainTimeoutSeconds) plus the final commit
and client shutdown, or a rolling deploy kills pods mid-drain and their in-flight commands repeat.
*/}}
{{- define "promo-bridge.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.batching.drainTimeoutSeconds | int) (.Values.terminationGraceExtraSeconds | int) }}
{{- end }}

{{- define "promo-bridge.kafkaTlsEnabled" -}}
{{- if and (has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL")) .Values.kafka.tls.existingSecret }}true{{ end }}
{{- end }}

{{- define "promo-bridge.kafkaSaslEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "promo-bridge.kafkaTlsDir" -}}/etc/promo-bridge/kafka-tls{{- end }}
