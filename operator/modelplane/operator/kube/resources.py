"""The Kubernetes resource types the operator reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from modelplane.api import contract


@dataclass(frozen=True)
class ResourceType:
    api_version: str  # "v1", "apps/v1", "modelplane.io/v1alpha1"
    plural: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def _prefix(self) -> str:
        return f"/api/{self.api_version}" if not self.group else f"/apis/{self.api_version}"

    def collection_path(self, namespace: str) -> str:
        return f"{self._prefix()}/namespaces/{namespace}/{self.plural}"

    def object_path(self, namespace: str, name: str, subresource: str | None = None) -> str:
        path = f"{self.collection_path(namespace)}/{name}"
        return f"{path}/{subresource}" if subresource else path


LLMDEPLOYMENTS: Final = ResourceType(contract.API_VERSION, contract.PLURAL, contract.KIND)
CONFIG_MAPS: Final = ResourceType("v1", "configmaps", "ConfigMap")
EVENTS: Final = ResourceType("v1", "events", "Event")
PODS: Final = ResourceType("v1", "pods", "Pod")
SERVICES: Final = ResourceType("v1", "services", "Service")
DEPLOYMENTS: Final = ResourceType("apps/v1", "deployments", "Deployment")
POD_DISRUPTION_BUDGETS: Final = ResourceType(
    "policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"
)
NETWORK_POLICIES: Final = ResourceType("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
JOBS: Final = ResourceType("batch/v1", "jobs", "Job")
PERSISTENT_VOLUME_CLAIMS: Final = ResourceType(
    "v1", "persistentvolumeclaims", "PersistentVolumeClaim"
)
SERVICE_MONITORS: Final = ResourceType(
    "monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor"
)
# A model's API keys, read only to call its replicas' admin API (LoRA adapters).
SECRETS: Final = ResourceType("v1", "secrets", "Secret")
# The gateway's scale-from-zero demand (modelplane.api.demand): read, never written.
LEASES: Final = ResourceType("coordination.k8s.io/v1", "leases", "Lease")

CHILD_TYPES: Final[dict[str, ResourceType]] = {
    t.kind: t
    for t in (
        CONFIG_MAPS,
        SERVICES,
        DEPLOYMENTS,
        POD_DISRUPTION_BUDGETS,
        NETWORK_POLICIES,
        SERVICE_MONITORS,
        JOBS,
    )
}
