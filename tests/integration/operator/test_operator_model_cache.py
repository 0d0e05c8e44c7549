"""Model sources on a real cluster: a shared cache filled once, and claims that cannot be shared.

Against KMock's emulator (no Kubernetes API server can run here), which has
no controllers: the test plays the Job controller by patching the download
Job's status, as the cluster would. What a user sees: with a cache profile
the replicas wait for the download (status `Downloading`), the claim is
created once per namespace, an upgrade keeps serving the old revision until
the new one is downloaded, a failed download says what to do; a pvc://
source on a ReadWriteOnce claim with several replicas is refused.
"""

from __future__ import annotations

from typing import Any

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for

CACHED: dict[str, Any] = {
    "model": {
        "source": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "cacheProfile": "shared",
        "credentialsSecretRef": {"name": "hf-token"},
    },
    "resources": {"gpus": 0},
    "replicas": 2,
}
PROFILES: dict[str, Any] = {
    "cacheProfiles": {"shared": {"storageClassName": "efs-sc", "size": "200Gi"}}
}


def condition(cluster: Cluster, name: str, type_: str) -> dict[str, Any]:
    return cluster.condition(name, type_)


def jobs(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return cluster.objects("jobs")


def finish_job(cluster: Cluster, name: str, *, failed: bool = False) -> None:
    """Play the Job controller: the download pod ended."""
    kind, reason = ("Failed", "BackoffLimitExceeded") if failed else ("Complete", "")
    body = {
        "status": {
            "conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": reason and
                 "Job has reached the specified backoff limit"}
            ]
        }
    }  # fmt: skip
    cluster.kubectl.patch("batch/v1", "jobs", "default", name, body, subresource="status")


def test_replicas_wait_for_the_download_and_an_upgrade_keeps_serving(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(**PROFILES):
        cluster.create_llmd("llama", CACHED)
        job_name = wait_for("a download Job", lambda: next(iter(jobs(cluster)), None))
        wait_for(
            "status Downloading",
            lambda: condition(cluster, "llama", "Progressing")["reason"] == "Downloading",
        )
        status = cluster.status("llama")
        assert status["phase"] == "Pending"
        assert job_name in condition(cluster, "llama", "Progressing")["message"]
        assert "llama" not in cluster.objects("deployments")

        claim = cluster.objects("persistentvolumeclaims")["modelplane-cache-shared"]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["storageClassName"] == "efs-sc"
        assert "ownerReferences" not in claim["metadata"]  # shared by the namespace's models
        job = jobs(cluster)[job_name]
        (owner,) = job["metadata"]["ownerReferences"]
        assert owner["uid"] == cluster.llmd("llama")["metadata"]["uid"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["modelplane", "model", "download"]
        token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
        assert token["valueFrom"]["secretKeyRef"]["name"] == "hf-token"

        finish_job(cluster, job_name)
        deployment = wait_for("the Deployment", lambda: cluster.objects("deployments").get("llama"))
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/cache/huggingface"]["readOnly"] is True
        assert mounts["/cache/compile"].get("readOnly") is not True
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["HF_HUB_OFFLINE"]["value"] == "1" and "HF_TOKEN" not in env
        cluster.report_deployment("llama", replicas=2, readyReplicas=2, updatedReplicas=2)
        wait_for("phase Ready", lambda: cluster.status("llama").get("phase") == "Ready")

        # An upgrade: a new Job; the running replicas keep their template meanwhile.
        template = deployment["spec"]["template"]
        cluster.patch_llmd("llama", {"model": {"revision": "v2"}})
        new_job = wait_for(
            "a second download Job", lambda: next((n for n in jobs(cluster) if n != job_name), None)
        )
        wait_for("the old Job deleted", lambda: job_name not in jobs(cluster))
        wait_for(
            "status Downloading",
            lambda: condition(cluster, "llama", "Progressing")["reason"] == "Downloading",
        )
        assert cluster.status("llama")["phase"] == "Progressing"
        assert condition(cluster, "llama", "Ready")["status"] == "True"
        assert cluster.objects("deployments")["llama"]["spec"]["template"] == template

        finish_job(cluster, new_job, failed=True)
        wait_for(
            "status DownloadFailed",
            lambda: condition(cluster, "llama", "Degraded")["reason"] == "DownloadFailed",
        )
        message = condition(cluster, "llama", "Degraded")["message"]
        assert f"kubectl logs -n default job/{new_job}" in message
        assert "backoff limit" in message
        assert cluster.objects("deployments")["llama"]["spec"]["template"] == template

        cluster.kubectl.delete("batch/v1", "jobs", "default", new_job)  # the documented retry
        retried = wait_for("the Job again", lambda: jobs(cluster).get(new_job))
        assert "status" not in retried or not retried["status"].get("conditions")
        finish_job(cluster, new_job)
        wait_for(
            "the new revision rolled out",
            lambda: (
                cluster.objects("deployments")["llama"]["metadata"]["annotations"][
                    contract.ANNOTATION_REVISION
                ]
                == "v2"
            ),
        )
        # One claim for the namespace, created once.
        creates = [w for w in cluster.operator_writes() if "persistentvolumeclaims" in w]
        assert creates == ["POST /api/v1/namespaces/default/persistentvolumeclaims"]


def test_an_unknown_cache_profile_is_refused_with_the_known_ones(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator(**PROFILES):
        cluster.create_llmd("llama", {**CACHED, "model": {**CACHED["model"], "cacheProfile": "x"}})
        wait_for("phase Failed", lambda: cluster.status("llama").get("phase") == "Failed")
        message = condition(cluster, "llama", "FitCheck")["message"]
        assert "model.cacheProfile x is not a cache profile" in message and "shared" in message
        assert jobs(cluster) == {} and cluster.objects("persistentvolumeclaims") == {}


def _claim(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "20Gi"}}},
    }


def test_a_read_write_once_claim_with_several_replicas_is_refused(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    cluster.kubectl.create("persistentvolumeclaims", _claim("weights-rwo", "ReadWriteOnce"))
    cluster.kubectl.create("persistentvolumeclaims", _claim("weights-rox", "ReadOnlyMany"))
    spec = {"model": {"source": "pvc://weights-rwo/llama"}, "replicas": 2}
    with run_operator():
        cluster.create_llmd("rwo", spec)
        cluster.create_llmd("rox", {**spec, "model": {"source": "pvc://weights-rox/llama"}})
        cluster.create_llmd("missing", {**spec, "model": {"source": "pvc://nope/llama"}})
        wait_for("rwo Failed", lambda: cluster.status("rwo").get("phase") == "Failed")
        message = condition(cluster, "rwo", "FitCheck")["message"]
        assert "weights-rwo is ReadWriteOnce" in message and "up to 2 replicas" in message
        assert "rwo" not in cluster.objects("deployments")
        wait_for("rox created", lambda: "rox" in cluster.objects("deployments"))
        wait_for("missing Failed", lambda: cluster.status("missing").get("phase") == "Failed")
        assert "nope does not exist" in condition(cluster, "missing", "FitCheck")["message"]

        cluster.patch_llmd("rwo", {"replicas": 1})  # what the message says to do
        wait_for("rwo created", lambda: "rwo" in cluster.objects("deployments"))
