{{/* A worker's pod template: one task queue per process (TURNFLOW_WORKER_KINDS). */}}
{{- define "turnflow.workerPod" -}}
{{- $root := .root -}}
{{- $w := .worker -}}
metadata:
  labels:
    {{- include "turnflow.labels" $root | nindent 4 }}
    app.kubernetes.io/component: worker-{{ .kind }}
    turnflow.dev/reaches-models: "true"
  annotations:
    checksum/policy: {{ include (print $root.Template.BasePath "/policy-configmap.yaml") $root | sha256sum }}
spec:
  {{- include "turnflow.podSecurity" $root | nindent 2 }}
  # Longer than temporal.yaml shutdown.worker_grace: running activities finish or move on.
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds }}
  containers:
    - name: worker
      image: {{ include "turnflow.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["python", "-m", "workers.main"]
      env:
        {{- include "turnflow.env" $root | nindent 8 }}
        - name: TURNFLOW_WORKER_KINDS
          value: {{ .kind }}
        - name: TURNFLOW_WORKER_METRICS_PORT
          value: "9464"
      ports:
        - {name: metrics, containerPort: 9464, protocol: TCP}
      # A worker serves no traffic: it is live while its metrics endpoint answers.
      startupProbe:
        tcpSocket: {port: metrics}
        periodSeconds: 5
        failureThreshold: 60
      livenessProbe:
        tcpSocket: {port: metrics}
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        tcpSocket: {port: metrics}
        periodSeconds: 10
      resources:
        {{- toYaml $w.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "turnflow.volumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "turnflow.volumes" $root | nindent 4 }}
  {{- with $w.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "turnflow.selector" (dict "root" $root "component" (printf "worker-%s" .kind)) | nindent 10 }}
{{- end -}}

{{/* KEDA triggers of a worker kind: its task queue's backlog, and (chat) its slots in use. */}}
{{- define "turnflow.workerTriggers" -}}
{{- $root := .root -}}
{{- $a := .worker.autoscaling -}}
- type: temporal
  metadata:
    endpoint: {{ $root.Values.temporal.address | quote }}
    {{- if .buildIdFromController }}
    # Empty: the controller fills in each version's deployment, build and namespace (KEDA >= 2.20).
    namespace: ""
    workerDeploymentName: ""
    workerDeploymentBuildId: ""
    {{- else }}
    namespace: {{ $root.Values.temporal.namespace | quote }}
    {{- end }}
    taskQueue: {{ get $root.Values.temporal.taskQueues .kind | quote }}
    # Set explicitly: the scaler's code and its docs disagree on the default.
    queueTypes: {{ $a.queueTypes | quote }}
    targetQueueSize: {{ $a.targetQueueSize | quote }}
    activationTargetQueueSize: {{ $a.activationTargetQueueSize | quote }}
    {{- if $root.Values.temporal.tls.serverName }}
    tlsServerName: {{ $root.Values.temporal.tls.serverName | quote }}
    {{- end }}
  {{- if or $root.Values.temporal.apiKey.existingSecret (and $root.Values.temporal.tls.enabled $root.Values.temporal.tls.existingSecret) }}
  authenticationRef:
    name: {{ include "turnflow.fullname" $root }}-temporal
  {{- end }}
{{- if $a.slotUtilization.enabled }}
# Backlog is a late signal for interactive turns; the share of workflow slots in use leads it.
- type: prometheus
  metadata:
    serverAddress: {{ $a.slotUtilization.prometheusAddress | quote }}
    # The SDK's gauges (the worker's /metrics); `namespace` there is Temporal's, so filter by queue.
    {{- $sel := printf "worker_type=\"WorkflowWorker\", task_queue=\"%s\"" (get $root.Values.temporal.taskQueues .kind) }}
    query: >-
      sum(temporal_worker_task_slots_used{ {{- $sel -}} }) / clamp_min(sum(temporal_worker_task_slots_used{ {{- $sel -}} })
      + sum(temporal_worker_task_slots_available{ {{- $sel -}} }), 1)
    threshold: {{ $a.slotUtilization.target | quote }}
    metricType: Value
{{- end }}
{{- end -}}
