"""Where a cache profile's download stands, and what waits for it.

Pure. With `spec.model.cacheProfile`, the replicas of a revision start only
after that revision's download Job succeeded: until then the model's
Deployment and settings stay as they run (a first deployment is not created
yet, an upgrade keeps serving the old revision), and status says
`Downloading`. A failed Job is reported, with its message and how to retry,
and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.api import contract
from modelplane.operator.builders.naming import config_map_name
from modelplane.operator.reconcile.children_plan import ChildKey, child_key
from modelplane.operator.reconcile.observed import ObservedChild

DOWNLOADING = "Downloading"
DOWNLOAD_FAILED = "DownloadFailed"


@dataclass(frozen=True)
class DownloadState:
    job: str
    namespace: str
    source: str
    revision: str
    succeeded: bool
    failed: bool
    message: str = ""

    @property
    def waiting(self) -> bool:
        return not self.succeeded

    def describe(self) -> str:
        if self.failed:
            detail = f": {self.message}" if self.message else ""
            return (
                f"downloading {self.source} at {self.revision} failed (Job {self.job}{detail}); "
                f"see kubectl logs -n {self.namespace} job/{self.job}, fix the cause and "
                f"delete the Job to retry"
            )
        return f"downloading {self.source} at {self.revision} into the model cache (Job {self.job})"


def download_state(
    desired: list[dict[str, Any]], observed: Mapping[ChildKey, ObservedChild]
) -> DownloadState | None:
    """None without a download Job; otherwise how the desired Job stands."""
    job = next((m for m in desired if m["kind"] == "Job"), None)
    if job is None:
        return None
    seen = observed.get(child_key(job))
    outcome = seen.job if seen is not None else None
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return DownloadState(
        job=job["metadata"]["name"],
        namespace=job["metadata"]["namespace"],
        source=str(args[0]),
        revision=str(job["metadata"]["annotations"].get(contract.ANNOTATION_REVISION, "")),
        succeeded=outcome is not None and outcome.succeeded,
        failed=outcome is not None and outcome.failed,
        message=outcome.message if outcome is not None else "",
    )


def held_while_downloading(name: str) -> set[ChildKey]:
    """Children that keep what they run (or are not created) until the download is done."""
    canary = f"{name}-{contract.TRACK_CANARY}"
    return {
        ("Deployment", name),
        ("ConfigMap", config_map_name(name)),
        ("Deployment", canary),
        ("ConfigMap", config_map_name(name, contract.TRACK_CANARY)),
    }
