{{/*
The namespace of every namespaced object (values: namespace.name).
*/}}
{{- define "weft.namespace" -}}
{{ .Values.namespace.name }}
{{- end }}

{{/*
The one image every container runs: repository:tag, the tag defaulting to appVersion.
*/}}
{{- define "weft.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A list of strings as a one-line JSON array: ["a", "b"].
*/}}
{{- define "weft.jsonList" -}}
[{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ toJson $s }}{{ end }}]
{{- end }}

{{/*
net-conf.json. At default values, byte for byte the text of manifests/configmap.yaml;
null or empty optional fields are left out (weft's defaults apply). Numbers through
toJson: Helm reads YAML numbers as float64, which print as 1.6777215e+07 otherwise.
*/}}
{{- define "weft.netConf" -}}
{{- $c := .Values.netConf -}}
{
  "clusterCIDRs": {{ include "weft.jsonList" $c.clusterCIDRs }},
{{- with $c.serviceCIDRs }}
  "serviceCIDRs": {{ include "weft.jsonList" . }},
{{- end }}
  "nodeSubnetSizeV4": {{ toJson $c.nodeSubnetSizeV4 }},
{{- with $c.nodeSubnetSizeV6 }}
  "nodeSubnetSizeV6": {{ toJson . }},
{{- end }}
  "vni": {{ toJson $c.vni }},
  "port": {{ toJson $c.port }},
  "mtu": {{ toJson $c.mtu }},
  "directRouting": {{ toJson $c.directRouting }},
  "masquerade": {{ toJson $c.masquerade }},
  "networkPolicy": {{ toJson $c.networkPolicy }}
{{- with $c.bridge }},
  "bridge": {{ toJson . }}
{{- end }}
{{- with $c.vxlanDevice }},
  "vxlanDevice": {{ toJson . }}
{{- end }}
}
{{- end }}

{{/*
10-weft.conflist, installed on every node by the agent's init container.
*/}}
{{- define "weft.conflist" -}}
{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    {
      "type": "weft",
      "subnetFile": "/run/weft/subnet.env"
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true},
      "snat": true
    }
  ]
}
{{- end }}

{{/*
The pods read the ConfigMap at start: its hash in their template makes `helm upgrade`
roll them when it changes (the only difference from manifests/, see e2e/tests/helm/main.rs).
*/}}
{{- define "weft.configHash" -}}
{{ printf "%s\n%s" (include "weft.netConf" .) (include "weft.conflist" .) | sha256sum }}
{{- end }}

{{/*
Rules across values that values.schema.json cannot state; each failure names the value
and what to do. The agent would refuse the same net-conf.json at start, but only in its
logs, node by node.
*/}}
{{- define "weft.validate" -}}
{{- $c := .Values.netConf -}}
{{- $v4 := 0 -}}
{{- $v6 := 0 -}}
{{- range $c.clusterCIDRs -}}
{{- if contains ":" . -}}{{- $v6 = add1 $v6 -}}{{- else -}}{{- $v4 = add1 $v4 -}}{{- end -}}
{{- end -}}
{{- if or (gt $v4 1) (gt $v6 1) -}}
{{- fail (printf "netConf.clusterCIDRs %s: at most one IPv4 and one IPv6 prefix" (toJson $c.clusterCIDRs)) -}}
{{- end -}}
{{- if and (eq $v4 1) (eq $v6 1) (contains ":" (first $c.clusterCIDRs)) -}}
{{- fail (printf "netConf.clusterCIDRs %s: list the IPv4 prefix first (IPv6-first dual-stack is not supported)" (toJson $c.clusterCIDRs)) -}}
{{- end -}}
{{- $minMtu := ternary 1280 576 (gt $v6 0) -}}
{{- $mtu := int64 $c.mtu -}}
{{- if and (ne $mtu 0) (lt $mtu (int64 $minMtu)) -}}
{{- fail (printf "netConf.mtu %d: 0 (automatic) or %d..65535" $mtu $minMtu) -}}
{{- end -}}
{{- $bridge := $c.bridge | default "weft0" -}}
{{- if eq $bridge ($c.vxlanDevice | default "weft.1") -}}
{{- fail (printf "netConf.vxlanDevice %q is also the bridge's name; the two must differ" $bridge) -}}
{{- end -}}
{{- if and .Values.namespace.create (eq .Release.Namespace .Values.namespace.name) -}}
{{- fail (printf "namespace.create=true: the chart creates namespace %s itself (labelled for Pod Security level privileged) and cannot also hold the release there. Install the release into another namespace (helm install --namespace kube-system, without --create-namespace), or create and label %s yourself and set namespace.create=false" .Values.namespace.name .Values.namespace.name) -}}
{{- end -}}
{{- if and .Values.admissionPolicy.enabled (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "admissionPolicy.enabled=true needs Kubernetes 1.30 or later (ValidatingAdmissionPolicy v1); this cluster is %s. Upgrade, or set admissionPolicy.enabled=false: the agent then works under RBAC alone (README, Security)" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end }}
