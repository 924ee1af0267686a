{{/*
The chart name, shortened to 63 characters (a DNS label).
*/}}
{{- define "posthorn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full resource name: the release name, plus the chart name unless the
release name already contains it.
*/}}
{{- define "posthorn.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "posthorn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "posthorn.labels" -}}
helm.sh/chart: {{ include "posthorn.chart" . }}
{{ include "posthorn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: posthorn
{{- end }}

{{/*
Labels that select the pods (immutable in a Deployment: never add to them).
*/}}
{{- define "posthorn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "posthorn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "posthorn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "posthorn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding the secret settings: existingSecret, or the chart's own.
*/}}
{{- define "posthorn.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "posthorn.fullname" . }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, or repository:tag (tag defaults to
the chart's appVersion).
*/}}
{{- define "posthorn.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
A value for an environment variable: integers stay integers (Helm reads
numbers as floats, which would print 26214400 as 2.62144e+07).
*/}}
{{- define "posthorn.envValue" -}}
{{- if kindIs "float64" . }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Fails rendering unless the secret settings can be found: either
existingSecret, or secrets.databaseUrl and secrets.jwtSecret. Also refuses
literal values for the secret variables in extraEnv.
*/}}
{{- define "posthorn.validate" -}}
{{- if not .Values.existingSecret }}
{{- $hint := "set existingSecret to the name of a Secret holding POSTHORN_DATABASE_URL and POSTHORN_JWT_SECRET (and optionally POSTHORN_SMTP_URL), or set secrets.databaseUrl and secrets.jwtSecret" }}
{{- $_ := required (printf "posthorn: secrets.databaseUrl is required when existingSecret is empty: %s" $hint) .Values.secrets.databaseUrl }}
{{- $_ := required (printf "posthorn: secrets.jwtSecret is required when existingSecret is empty: %s" $hint) .Values.secrets.jwtSecret }}
{{- if not (regexMatch "^postgres(ql)?://" .Values.secrets.databaseUrl) }}
{{- fail "posthorn: secrets.databaseUrl must be a postgres:// or postgresql:// URL" }}
{{- end }}
{{- if lt (len .Values.secrets.jwtSecret) 32 }}
{{- fail "posthorn: secrets.jwtSecret must be at least 32 bytes (e.g. openssl rand -hex 32)" }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- $providerUrl := and (hasPrefix "POSTHORN_PROVIDERS__" .name) (hasSuffix "__URL" .name) }}
{{- if and (or $providerUrl (has .name (list "POSTHORN_DATABASE_URL" "POSTHORN_JWT_SECRET" "POSTHORN_SMTP_URL"))) (hasKey . "value") }}
{{- fail (printf "posthorn: extraEnv must not give %s a literal value: it is a secret, put it in existingSecret (or secrets.*)" .name) }}
{{- end }}
{{- end }}
{{- end }}
