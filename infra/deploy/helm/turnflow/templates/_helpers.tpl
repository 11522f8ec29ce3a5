{{/* Names and labels, in the shape of temporalio/helm-charts. */}}
{{- define "turnflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turnflow.fullname" -}}
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

{{- define "turnflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "turnflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: api, worker-chat, inference-NAME, redis, ... */}}
{{- define "turnflow.selector" -}}
app.kubernetes.io/name: {{ include "turnflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "turnflow.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "turnflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "turnflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "turnflow.pgCluster" -}}{{ include "turnflow.fullname" . }}-pg{{- end -}}
{{- define "turnflow.redisHost" -}}{{ include "turnflow.fullname" . }}-redis{{- end -}}
{{- define "turnflow.poolService" -}}{{ include "turnflow.fullname" .root }}-inference-{{ .pool.name }}{{- end -}}

{{/* A pool's weights: pinned revision, PVC or OCI image. */}}
{{- define "turnflow.poolVersion" -}}
{{- $m := .model -}}
{{- if $m.revision -}}{{ $m.revision }}
{{- else if $m.ociRef -}}{{ regexReplaceAll "^.*@" $m.ociRef "" }}
{{- else -}}{{ $m.version }}
{{- end -}}
{{- end -}}

{{/* Settings every turnflow process gets: TURNFLOW_ variables (infra/config/settings.py). */}}
{{- define "turnflow.env" -}}
- name: TURNFLOW_ENVIRONMENT
  value: {{ .Values.settings.environment | quote }}
- name: TURNFLOW_LOG_LEVEL
  value: {{ .Values.settings.logLevel | quote }}
- name: TURNFLOW_POLICY_OVERLAY_FILE
  value: /etc/turnflow/policy/overlay.yaml
- name: TURNFLOW_TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
{{- with .Values.temporal.tls }}
{{- if .enabled }}
- name: TURNFLOW_TEMPORAL_TLS
  value: "true"
{{- if .existingSecret }}
- name: TURNFLOW_TEMPORAL_TLS_CA_FILE
  value: /etc/turnflow/temporal-tls/ca.crt
{{- if .mutual }}
- name: TURNFLOW_TEMPORAL_TLS_CERT_FILE
  value: /etc/turnflow/temporal-tls/tls.crt
- name: TURNFLOW_TEMPORAL_TLS_KEY_FILE
  value: /etc/turnflow/temporal-tls/tls.key
{{- end }}
{{- end }}
{{- if .serverName }}
- name: TURNFLOW_TEMPORAL_TLS_SERVER_NAME
  value: {{ .serverName | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.temporal.apiKey.existingSecret }}
- name: TURNFLOW_TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.temporal.apiKey.existingSecret }}, key: {{ .Values.temporal.apiKey.key }}}
{{- end }}
{{- if .Values.temporal.tlsWaived }}
- name: TURNFLOW_TLS_WAIVED
  value: {{ .Values.temporal.tlsWaived | quote }}
{{- end }}
# Production keeps /metrics off the public port (Settings refuses otherwise, in every process).
- name: TURNFLOW_API_METRICS_PORT
  value: {{ .Values.api.metricsPort | quote }}
- name: TURNFLOW_DEPLOYMENT_NAME
  value: {{ include "turnflow.deploymentPrefix" . | quote }}
- name: TURNFLOW_WORKER_VERSIONING
  value: {{ eq .Values.temporal.versioning.mode "controller" | quote }}
{{- if eq .Values.postgres.mode "cnpg" }}
- name: PG_USER
  valueFrom:
    secretKeyRef: {name: {{ include "turnflow.pgCluster" . }}-app, key: username}
- name: PG_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "turnflow.pgCluster" . }}-app, key: password}
- name: TURNFLOW_DATABASE_URL
  {{- if .Values.postgres.cnpg.pooler.enabled }}
  value: "postgresql+psycopg://$(PG_USER):$(PG_PASSWORD)@{{ include "turnflow.pgCluster" . }}-pooler-rw:5432/turnflow?sslmode=require"
  {{- else }}
  value: "postgresql+psycopg://$(PG_USER):$(PG_PASSWORD)@{{ include "turnflow.pgCluster" . }}-rw:5432/turnflow?sslmode=verify-full&sslrootcert=/etc/turnflow/postgres-ca/ca.crt"
  {{- end }}
{{- else }}
- name: TURNFLOW_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.postgres.external.existingSecret }}, key: {{ .Values.postgres.external.key }}}
{{- end }}
{{- if eq .Values.redis.mode "statefulset" }}
- name: TURNFLOW_REDIS_URL
  value: "redis://{{ include "turnflow.redisHost" . }}:6379/0"
{{- else }}
- name: TURNFLOW_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.external.existingSecret }}, key: {{ .Values.redis.external.key }}}
{{- if .Values.redis.external.cluster }}
- name: TURNFLOW_REDIS_CLUSTER
  value: "true"
{{- end }}
{{- end }}
{{- /* Each model's endpoints are in the policy overlay; this URL is the default pool's. */}}
{{- with (first (include "turnflow.enabledPools" . | fromYamlArray)) }}
- name: TURNFLOW_TGI_URL
  value: "http://{{ include "turnflow.fullname" $ }}-inference-{{ .name }}:{{ .port }}"
{{- end }}
{{- if .Values.secrets.modelToken.existingSecret }}
- name: TURNFLOW_TGI_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.modelToken.existingSecret }}, key: {{ .Values.secrets.modelToken.key }}}
{{- end }}
- name: TURNFLOW_PAYLOAD_KEYS
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.payloadKeys.existingSecret }}, key: {{ .Values.secrets.payloadKeys.key }}}
{{- if .Values.secrets.webhook.existingSecret }}
- name: TURNFLOW_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef: {name: {{ .Values.secrets.webhook.existingSecret }}, key: {{ .Values.secrets.webhook.key }}}
{{- end }}
{{- with .Values.embedding }}
{{- if .url }}
- name: TURNFLOW_EMBEDDING_URL
  value: {{ .url | quote }}
- name: TURNFLOW_EMBEDDING_MODEL
  value: {{ .model | quote }}
- name: TURNFLOW_EMBEDDING_VERSION
  value: {{ .version | quote }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.settings.extra }}
- name: TURNFLOW_{{ $name | upper }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Worker Deployments' prefix: the controller names them <namespace>/<resource name>. */}}
{{- define "turnflow.deploymentPrefix" -}}
{{- if eq .Values.temporal.versioning.mode "controller" -}}
{{ .Release.Namespace }}/{{ .Values.temporal.versioning.deploymentName }}
{{- else -}}
{{ .Values.temporal.versioning.deploymentName }}
{{- end -}}
{{- end -}}

{{/* The enabled pools, each over inference.poolDefaults. */}}
{{- define "turnflow.enabledPools" -}}
{{- $pools := list -}}
{{- range .Values.inference.pools }}
{{- $pool := mergeOverwrite (deepCopy $.Values.inference.poolDefaults) (deepCopy .) -}}
{{- if $pool.enabled }}{{ $pools = append $pools $pool }}{{ end -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/* Volumes every turnflow pod mounts: the policy overlay, a writable /tmp, TLS material. */}}
{{- define "turnflow.volumes" -}}
- name: policy
  configMap: {name: {{ include "turnflow.fullname" . }}-policy}
- name: tmp
  emptyDir: {sizeLimit: 1Gi}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  secret: {secretName: {{ .Values.temporal.tls.existingSecret }}}
{{- end }}
{{- if and (eq .Values.postgres.mode "cnpg") (not .Values.postgres.cnpg.pooler.enabled) }}
- name: postgres-ca
  secret: {secretName: {{ include "turnflow.pgCluster" . }}-ca, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end -}}

{{- define "turnflow.volumeMounts" -}}
- {name: policy, mountPath: /etc/turnflow/policy, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret }}
- {name: temporal-tls, mountPath: /etc/turnflow/temporal-tls, readOnly: true}
{{- end }}
{{- if and (eq .Values.postgres.mode "cnpg") (not .Values.postgres.cnpg.pooler.enabled) }}
- {name: postgres-ca, mountPath: /etc/turnflow/postgres-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "turnflow.podSecurity" -}}
serviceAccountName: {{ include "turnflow.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
