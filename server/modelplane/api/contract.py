"""Names the operator, the gateway, the chart and the dashboards agree on.

The operator writes these labels, annotations and ports onto the objects it
creates; the gateway discovers model replicas by them; the chart's RBAC,
ServiceMonitors and dashboards select by them. They live in one module so a
rename is one edit, and a test of any one part proves the others' contract.
"""

from __future__ import annotations

from typing import Final

# The custom resource.
GROUP: Final = "modelplane.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LLMDeployment"
PLURAL: Final = "llmdeployments"
SINGULAR: Final = "llmdeployment"
SHORT_NAME: Final = "llmd"

# Kubernetes' recommended labels ("Recommended Labels" in the Kubernetes docs).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

PART_OF: Final = "modelplane"
MANAGED_BY: Final = "modelplane-operator"
COMPONENT_MODEL_SERVER: Final = "model-server"
COMPONENT_GATEWAY: Final = "gateway"
COMPONENT_OPERATOR: Final = "operator"
COMPONENT_MODEL_DOWNLOAD: Final = "model-download"  # a cache profile's download Job
COMPONENT_MODEL_CACHE: Final = "model-cache"  # a cache profile's PersistentVolumeClaim

# Modelplane's own labels, on every child of an LLMDeployment (and on its pods).
LABEL_LLMDEPLOYMENT: Final = f"{GROUP}/llmdeployment"  # the LLMDeployment's name
# Which serving track a Deployment/Service/pod belongs to: "stable", or "canary"
# while a canary rollout runs. Plain rolling updates only ever have "stable".
LABEL_TRACK: Final = f"{GROUP}/track"
TRACK_STABLE: Final = "stable"
TRACK_CANARY: Final = "canary"

# Annotations on a model Service, read by the gateway's Kubernetes discovery.
# (EndpointSlices inherit a Service's labels but not its annotations, so the
# gateway watches both: Services for these, EndpointSlices for ready addresses.)
ANNOTATION_SERVED_MODEL: Final = f"{GROUP}/served-model-name"  # the OpenAI `model` name
# "0".."100": this track's share of the model's traffic.
ANNOTATION_TRAFFIC_WEIGHT: Final = f"{GROUP}/traffic-weight"
ANNOTATION_REVISION: Final = f"{GROUP}/revision"  # the model revision this track serves
# Which balancing strategy the gateway uses for this model ("least-load" or "prefix").
ANNOTATION_ROUTING: Final = f"{GROUP}/routing"
# The LoRA adapters configured for this model (spec.adapters[].name), comma-separated,
# e.g. "sql-lora,chat-lora"; absent or empty when there are none. The gateway routes a
# request whose `model` is one of them to this model's replicas that hold it (each
# replica's /ready lists the adapters it has loaded).
ANNOTATION_ADAPTERS: Final = f"{GROUP}/adapters"

# On the Deployment's pod template: hash of the rendered template, to detect drift.
ANNOTATION_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
# On every child of an LLMDeployment: hash of the manifest the operator last
# applied (replicas excluded), so a resync that finds it unchanged writes nothing.
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
# On a model's Deployments: hash of the LLMDeployment spec (replicas left out) that
# produced the template, so an operator change of the template (same spec hash) is
# told apart from the model's own (and only the former waits for a rollout slot).
ANNOTATION_MODEL_SPEC_HASH: Final = f"{GROUP}/model-spec-hash"

# On a model Service: requests one replica runs at once (`--max-num-seqs` in the engine's
# extraArgs), a decimal
# integer; the gateway queues what exceeds replicas x this, by tenant weight.
ANNOTATION_REPLICA_CONCURRENCY: Final = f"{GROUP}/replica-concurrency"

# On the gateway's scale-from-zero demand Lease (coordination.k8s.io/v1, one per
# LLMDeployment, `modelplane.api.demand`), beside its spec.renewTime (when it held a
# request): how many requests that gateway replica held for the model then (a decimal
# integer). Each gateway replica writes its own count and the last write wins, so with
# several replicas it is a lower bound of what all of them hold; the autoscaler reads
# it, with the time, as the arrival rate that sizes a start from zero.
ANNOTATION_DEMAND_HELD: Final = f"{GROUP}/scale-from-zero-held-requests"
# On the same Lease: requests a gateway replica has queued for the model because its
# replicas were saturated (tenants' fair share: they wait at the gateway, not in vLLM's
# queue, where the autoscaler would see them), as "COUNT@TIME" (TIME in RFC 3339 UTC).
# Written apart from spec.renewTime, which stays the scale-from-zero signal alone.
ANNOTATION_GATEWAY_QUEUED: Final = f"{GROUP}/gateway-queued-requests"
# On an LLMDeployment: the autoscaler's remembered state (PolicyState as JSON),
# so an operator restart neither scales down early nor loses the timers.
ANNOTATION_AUTOSCALER_STATE: Final = f"{GROUP}/autoscaler-state"

# The Prometheus `job` label of scraped series, whichever monitor scrapes them (the
# chart's PodMonitors/ServiceMonitor or the operator's per-model ServiceMonitors):
# the alerts and dashboards select by these values.
JOB_MODEL_SERVER: Final = "modelplane-model-server"
JOB_OPERATOR: Final = "modelplane-operator"
JOB_GATEWAY: Final = "modelplane-gateway"

# Ports.
SERVER_PORT: Final = 8000  # modelplane serve, in pods and locally
SERVER_PORT_NAME: Final = "http"
# Where the server finds a `pvc://CLAIM/PATH` adapter source: CLAIM mounted at
# SERVER_ADAPTER_VOLUMES/CLAIM (`modelplane serve --adapter-volumes`).
SERVER_ADAPTER_VOLUMES: Final = "/adapters"
# The model server's admin API (LoRA adapters' load and unload): the operator alone may
# reach it (the model's NetworkPolicy), with the model's API key when it has one.
SERVER_ADMIN_PORT: Final = 8001
SERVER_ADMIN_PORT_NAME: Final = "admin"
OPERATOR_METRICS_PORT: Final = 8080
GATEWAY_PORT: Final = 8080
# The gateway's Prometheus /metrics, on a port of its own: the series name replicas by
# address and models by name, which the clients of the public port need not see.
GATEWAY_METRICS_PORT: Final = 8081
GATEWAY_METRICS_PORT_NAME: Final = "metrics"
