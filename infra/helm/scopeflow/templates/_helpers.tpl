{{/*
Names. fullname: "<release>-<chart>" (or the release name when it already holds the chart name),
cut to 63 characters: a DNS label, as Kubernetes requires for Service names.
*/}}
{{- define "scopeflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scopeflow.fullname" -}}
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

{{/* "<fullname>-<component>", kept a DNS label. Call with (list $ "component"). */}}
{{- define "scopeflow.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "scopeflow.fullname" $root | trunc (int (sub 62 (len (index . 1)))) | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "scopeflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries (Helm's recommended app.kubernetes.io/* set). */}}
{{- define "scopeflow.labels" -}}
helm.sh/chart: {{ include "scopeflow.chart" . }}
{{ include "scopeflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scopeflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "scopeflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scopeflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (list $ "component"). */}}
{{- define "scopeflow.componentLabels" -}}
{{ include "scopeflow.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "scopeflow.componentSelectorLabels" -}}
{{ include "scopeflow.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "scopeflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scopeflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image "repository:tag"; tag defaults to the chart's appVersion. */}}
{{- define "scopeflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "scopeflow.rayImage" -}}
{{- $repo := default .Values.image.repository .Values.rayCluster.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.rayCluster.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/*
"<fullname>-<component>" for names that must be DNS-1035 labels (start with a letter, no dots), cut
to at most `max` characters: Service names (the API server refuses others) and the RayCluster's
(KubeRay refuses others). Helm allows release names that start with a digit or hold dots: fail
with the fix instead of rendering a Service the cluster refuses. Call with (list $ "component" max).
*/}}
{{- define "scopeflow.dns1035Name" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $budget := int (sub (sub (index . 2) 1) (len $component)) -}}
{{- $name := printf "%s-%s" (include "scopeflow.fullname" $root | trunc $budget | trimSuffix "-") $component -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "%q cannot be a Service or RayCluster name: those must be DNS-1035 labels (a-z, 0-9 and '-', starting with a letter). Use a release name that starts with a letter and has no dots, or set fullnameOverride" $name) -}}
{{- end -}}
{{- $name -}}
{{- end }}

{{/* Service names other components and NOTES.txt point at. */}}
{{- define "scopeflow.serverServiceName" -}}
{{- include "scopeflow.dns1035Name" (list . "prefect-server" 63) }}
{{- end }}
{{/* The RayCluster and its client Service share this name. KubeRay refuses RayCluster names over
53 characters (63 minus its longest Service suffix, "-serve-svc"): the cluster would never start. */}}
{{- define "scopeflow.rayServiceName" -}}
{{- include "scopeflow.dns1035Name" (list . "ray" 53) }}
{{- end }}
{{- define "scopeflow.daskServiceName" -}}
{{- include "scopeflow.dns1035Name" (list . "dask-scheduler" 63) }}
{{- end }}

{{/* Ray client address of the chart's RayCluster, for BackendConfig / the `ray` profile. */}}
{{- define "scopeflow.rayAddress" -}}
{{- printf "ray://%s:%d" (include "scopeflow.rayServiceName" .) (int .Values.rayCluster.service.clientPort) }}
{{- end }}

{{- define "scopeflow.daskAddress" -}}
{{- printf "tcp://%s:%d" (include "scopeflow.daskServiceName" .) (int .Values.dask.scheduler.service.port) }}
{{- end }}

{{/*
The Prefect API URL: prefect.apiUrl, else the chart's own server. Fails naming the key when
neither is there, instead of a worker that polls 127.0.0.1 forever.
*/}}
{{- define "scopeflow.prefectApiUrl" -}}
{{- if .Values.prefect.apiUrl }}
{{- .Values.prefect.apiUrl }}
{{- else if .Values.server.enabled }}
{{- printf "http://%s:%d/api" (include "scopeflow.serverServiceName" .) (int .Values.server.service.port) }}
{{- else }}
{{- required "prefect.apiUrl is required: set it to your Prefect API (Prefect Cloud workspace URL or http://<server>:4200/api), or set server.enabled=true to run a Prefect server in this release" nil }}
{{- end }}
{{- end }}

{{- define "scopeflow.dataClaimName" -}}
{{- default (include "scopeflow.componentName" (list . "data")) .Values.persistence.existingClaim }}
{{- end }}

{{/* Compute profiles for SCOPEFLOW_COMPUTE_PROFILES: the user's, plus the RayCluster's. */}}
{{- define "scopeflow.computeProfiles" -}}
{{- $profiles := deepCopy .Values.scopeflow.computeProfiles }}
{{- $ray := .Values.rayCluster }}
{{- if and $ray.enabled $ray.profile.name }}
{{- $_ := set $profiles $ray.profile.name (dict "kind" "ray" "address" (include "scopeflow.rayAddress" .) "workers" $ray.profile.workers "cpus_per_worker" $ray.profile.cpusPerWorker "gpus_per_worker" $ray.profile.gpusPerWorker) }}
{{- end }}
{{- toJson $profiles }}
{{- end }}

{{/*
Environment of every scopeflow container: Prefect API, scopeflow settings (SCOPEFLOW_*, see
scopeflow/_settings.py). Secrets are referenced (secretKeyRef / a mounted file), never inlined.
*/}}
{{- define "scopeflow.env" -}}
- name: PREFECT_API_URL
  value: {{ include "scopeflow.prefectApiUrl" . | quote }}
{{- with .Values.prefect.apiKeySecret.name }}
- name: PREFECT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.prefect.apiKeySecret.key }}
{{- end }}
- name: HOME
  value: /home/scopeflow
{{- with .Values.scopeflow.edgeUrl }}
- name: SCOPEFLOW_EDGE_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.scopeflow.edgeTokenSecret.name }}
- name: SCOPEFLOW_EDGE_TOKEN_FILE
  value: /var/run/secrets/scopeflow/edge/{{ .Values.scopeflow.edgeTokenSecret.key }}
{{- end }}
{{- $omero := .Values.scopeflow.omero }}
{{- if $omero.host }}
- name: SCOPEFLOW_OMERO_HOST
  value: {{ $omero.host | quote }}
- name: SCOPEFLOW_OMERO_PORT
  value: {{ $omero.port | quote }}
- name: SCOPEFLOW_OMERO_SECURE
  value: {{ $omero.secure | quote }}
{{- with $omero.group }}
- name: SCOPEFLOW_OMERO_GROUP
  value: {{ . | quote }}
{{- end }}
{{- with $omero.credentialsSecret.name }}
- name: SCOPEFLOW_OMERO_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $omero.credentialsSecret.usernameKey }}
- name: SCOPEFLOW_OMERO_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $omero.credentialsSecret.passwordKey }}
{{- end }}
- name: SCOPEFLOW_OMERO_SPILL_DIR
  value: {{ printf "%s/%s" (trimSuffix "/" .Values.persistence.mountPath) $omero.spillSubdir | quote }}
{{- end }}
{{- $profiles := include "scopeflow.computeProfiles" . }}
{{- if ne $profiles "{}" }}
- name: SCOPEFLOW_COMPUTE_PROFILES
  value: {{ $profiles | quote }}
{{- end }}
{{- with .Values.scopeflow.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Writable scratch for a read-only root filesystem, the edge token, the data volume. */}}
{{- define "scopeflow.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/scopeflow
- name: data
  mountPath: {{ .Values.persistence.mountPath }}
{{- if .Values.scopeflow.edgeTokenSecret.name }}
- name: edge-token
  mountPath: /var/run/secrets/scopeflow/edge
  readOnly: true
{{- end }}
{{- end }}

{{- define "scopeflow.volumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "scopeflow.dataClaimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- if .Values.scopeflow.edgeTokenSecret.name }}
- name: edge-token
  secret:
    secretName: {{ .Values.scopeflow.edgeTokenSecret.name }}
    defaultMode: 0400
    items:
      - key: {{ .Values.scopeflow.edgeTokenSecret.key }}
        path: {{ .Values.scopeflow.edgeTokenSecret.key }}
{{- end }}
{{- end }}

{{/* Mounts and volumes of Ray and Dask pods: scratch, /dev/shm for Ray, data when shared. */}}
{{- define "scopeflow.clusterVolumeMounts" -}}
{{- $root := index . 0 -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/scopeflow
{{- if index . 1 }}
- name: dshm
  mountPath: /dev/shm
{{- end }}
{{- if $root.Values.persistence.shareWithClusterWorkers }}
- name: data
  mountPath: {{ $root.Values.persistence.mountPath }}
{{- end }}
{{- end }}

{{- define "scopeflow.clusterVolumes" -}}
{{- $root := index . 0 -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- if index . 1 }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $root.Values.rayCluster.shmSize }}
{{- end }}
{{- if $root.Values.persistence.shareWithClusterWorkers }}
- name: data
{{- if $root.Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "scopeflow.dataClaimName" $root }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod: service account, pull secrets, security context. */}}
{{- define "scopeflow.podCommon" -}}
serviceAccountName: {{ include "scopeflow.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Scheduling of one component. Call with its values (nodeSelector, tolerations, affinity). */}}
{{- define "scopeflow.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* `ray start` parameters as strings (KubeRay wants a map of strings); num-gpus when > 0.
Helm reads every number in values as a float64, which toString writes as "1e+09" from 1e6 up:
`ray start --object-store-memory 1e+09` refuses that, so whole numbers are written as integers.
Call with (list params gpus). */}}
{{- define "scopeflow.rayStartParams" -}}
{{- $params := dict }}
{{- range $k, $v := index . 0 }}
{{- if and (kindIs "float64" $v) (eq $v (floor $v)) }}
{{- $_ := set $params $k (printf "%d" (int64 $v)) }}
{{- else }}
{{- $_ := set $params $k (toString $v) }}
{{- end }}
{{- end }}
{{- if gt (float64 (index . 1)) 0.0 }}
{{- $_ := set $params "num-gpus" (toString (index . 1)) }}
{{- end }}
{{- toYaml $params }}
{{- end }}
