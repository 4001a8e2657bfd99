{{/*
Expand the name of the chart.
*/}}
{{- define "lambda-packager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (63 characters at most: some Kubernetes name fields
are limited to that by the DNS naming spec). If the release name contains the chart name it is
used as the full name.
*/}}
{{- define "lambda-packager.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "lambda-packager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "lambda-packager.labels" -}}
helm.sh/chart: {{ include "lambda-packager.chart" . }}
{{ include "lambda-packager.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "lambda-packager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lambda-packager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "lambda-packager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lambda-packager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Where the ConfigMap's packager.toml is mounted.
*/}}
{{- define "lambda-packager.configDir" -}}
/etc/lambda-packager
{{- end }}

{{/*
The configuration keys the chart owns, as JSON. The same values go into packager.toml and into
the container's environment: the image sets these variables (Dockerfile ENV) and variables win
over the file, so the Deployment must set them too or the file would lie.
*/}}
{{- define "lambda-packager.ownedConfig" -}}
{{- $owned := dict
  "server" (dict
    "listen" (printf "0.0.0.0:%d" (int .Values.containerPort))
    "admin_listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)))
  "pack" (dict "temp_dir" "/tmp/lambda-packager")
  "git" (dict "mirror_dir" "/tmp/lambda-packager-git")
  "store" (dict "backend" "s3") }}
{{- toJson $owned }}
{{- end }}

{{/*
The whole service configuration as JSON: config values overlaid with the chart-owned keys.
Refuses to render without a bucket.
*/}}
{{- define "lambda-packager.config" -}}
{{- $bucket := "" }}
{{- with .Values.config.store }}{{ with .s3 }}{{ $bucket = .bucket }}{{ end }}{{ end }}
{{- if not $bucket }}
{{- fail "config.store.s3.bucket is required: every replica stores packages in one S3 bucket (a local store would be one per pod and lose packages). Set it with --set config.store.s3.bucket=NAME; see docs/deploy.md." }}
{{- end }}
{{- $config := mustMergeOverwrite (deepCopy .Values.config) (include "lambda-packager.ownedConfig" . | fromJson) }}
{{- toJson $config }}
{{- end }}

{{/*
One TOML table: scalar and array keys first (null values are left out), then sub-tables.
Values are written as JSON, which is valid TOML for strings, numbers, booleans and arrays of
those. Argument: dict "name" "<dotted table name>" "table" <map>.
*/}}
{{- define "lambda-packager.tomlTable" -}}
[{{ .name }}]
{{- range $key, $value := .table }}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}

{{ include "lambda-packager.tomlTable" (dict "name" (printf "%s.%s" $.name $key) "table" $value) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
packager.toml, section by section in the order of config/packager.toml.
*/}}
{{- define "lambda-packager.packagerToml" -}}
{{- $config := include "lambda-packager.config" . | fromJson -}}
# Rendered by the lambda-packager Helm chart from .Values.config; see config/packager.toml.
{{- range $section := list "server" "pack" "limits" "store" "log" "git" }}
{{- with (get $config $section) }}

{{ include "lambda-packager.tomlTable" (dict "name" $section "table" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The environment variables that mirror the chart-owned keys (see ownedConfig).
*/}}
{{- define "lambda-packager.ownedEnv" -}}
{{- $owned := include "lambda-packager.ownedConfig" . | fromJson -}}
- name: LAMBDA_PACKAGER_SERVER__LISTEN
  value: {{ $owned.server.listen | quote }}
- name: LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN
  value: {{ $owned.server.admin_listen | quote }}
- name: LAMBDA_PACKAGER_PACK__TEMP_DIR
  value: {{ $owned.pack.temp_dir | quote }}
- name: LAMBDA_PACKAGER_GIT__MIRROR_DIR
  value: {{ $owned.git.mirror_dir | quote }}
{{- end }}

{{/*
The pod's termination grace period: longer than the preStop sleep plus the service's drain.
*/}}
{{- define "lambda-packager.terminationGracePeriodSeconds" -}}
{{- $drain := 30 }}
{{- with .Values.config.server }}{{ if not (kindIs "invalid" .shutdown_grace_secs) }}{{ $drain = int .shutdown_grace_secs }}{{ end }}{{ end }}
{{- $needed := add (int .Values.preStopSleepSeconds) $drain }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than preStopSleepSeconds + config.server.shutdown_grace_secs (%d), or the kubelet kills requests the service is still draining" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
