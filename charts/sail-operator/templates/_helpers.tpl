{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "sail-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart, unless the release name already contains the chart name. */}}
{{- define "sail-operator.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "sail-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sail-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sail-operator
{{- end }}

{{/* Labels that select the operator pod (immutable once installed). */}}
{{- define "sail-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sail-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "sail-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sail-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference: the digest pins it when set, else the tag (default appVersion). */}}
{{- define "sail-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaced install: true when watchNamespaces lists namespaces. */}}
{{- define "sail-operator.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* Namespaces that get the workload ServiceAccount: release, watched and extra ones, deduplicated. */}}
{{- define "sail-operator.workloadNamespaces" -}}
{{- $all := concat (list .Release.Namespace) .Values.watchNamespaces .Values.workloadServiceAccount.namespaces | uniq }}
{{- toJson $all }}
{{- end }}

{{/* The operator policy as JSON (its checksum restarts the operator on change). */}}
{{- define "sail-operator.policyJson" -}}
{{- toJson .Values.policy }}
{{- end }}
