"""One LLMDeployment's life on a real cluster, as a user lives it (`make e2e`).

The CPU sample (manifests/samples/smollm2-cpu.yaml) is applied to a cluster
where the chart runs the operator and the gateway. The tests run in this
order on that one model: it becomes Ready, answers through its own Service
and through the gateway (the OpenAI client, over `kubectl port-forward`),
scales up and down through the scale subresource, rolls out a new revision
while a client keeps calling it through the gateway without a single failed
request, rolls out a new engine setting while a client inside the cluster
calls its Service directly (no gateway to retry for it) without a single
failed request, and takes its children with it when deleted.

The kind node needs room for two replicas of the sample (2 CPUs and 8 GiB
each; the suite checks first) and the cluster must reach huggingface.co to
download the model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from e2e import models
from e2e.access import ClusterAccess
from e2e.clients import QUESTION, ClientLoop, client
from e2e.environment import REPO
from e2e.in_cluster import ServiceClient
from e2e.kube import Kubectl, wait_until
from e2e.models import LOAD_TIMEOUT, Model
from e2e.suite import CONTROL_PLANE_IMAGE
from modelplane.api import contract

MANIFEST: dict[str, Any] = models.sample("smollm2-cpu.yaml")
REVISION_ENV = "MODELPLANE_E2E_REVISION"
HPA = REPO / "manifests" / "autoscaling" / "hpa.yaml"


@pytest.fixture(scope="module")
def model(models_namespace: str, kubectl: Kubectl) -> Iterator[Model]:
    """The sample, applied and Ready; deleted afterwards (pods gone) if a test has not done it."""
    with models.deployed(kubectl, models_namespace, MANIFEST) as applied:
        yield applied


def test_it_becomes_ready_with_its_children_and_endpoint(model: Model, kubectl: Kubectl) -> None:
    status = models.status(kubectl, model)
    assert status["endpoint"] == f"http://{model.name}.{model.namespace}.svc:8000/v1"
    assert status["servedRevision"] == MANIFEST["spec"]["model"].get("revision", "main")
    kinds = {name.split("/")[0].split(".")[0] for name in models.children(kubectl, model)}
    assert kinds == {
        "deployment",
        "service",
        "configmap",
        "poddisruptionbudget",
        "networkpolicy",
    }


def test_it_answers_through_its_service(
    model: Model, kubectl: Kubectl, access: ClusterAccess
) -> None:
    with access.port_forward(kubectl, model.namespace, f"svc/{model.name}", 8000) as url:
        openai = client(url)
        assert [m.id for m in openai.models.list()] == [model.served_name]
        reply = openai.chat.completions.create(
            model=model.served_name, messages=QUESTION, max_tokens=16, temperature=0
        )
        assert reply.choices[0].message.content


def test_it_answers_through_the_gateway(model: Model, gateway_url: str) -> None:
    openai = client(gateway_url)
    wait_until(
        "the gateway to list the model",
        lambda: model.served_name in [m.id for m in openai.models.list()],
        timeout=120,
    )
    stream = openai.chat.completions.create(
        model=model.served_name, messages=QUESTION, max_tokens=16, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip()


def test_it_scales_through_the_scale_subresource(model: Model, kubectl: Kubectl) -> None:
    for replicas in (2, 1):
        kubectl(
            "scale", "llmdeployment", model.name, "-n", model.namespace, f"--replicas={replicas}"
        )
        wait_until(
            f"{replicas} ready replicas",
            functools.partial(models.ready, kubectl, model, replicas),
            timeout=LOAD_TIMEOUT,
            every=5,
        )
        deployment = kubectl.json("get", "deployment", model.name, "-n", model.namespace)
        assert deployment["spec"]["replicas"] == replicas


def test_an_hpa_can_scale_it(model: Model, kubectl: Kubectl) -> None:
    """The HPA controller reads the LLMDeployment's scale subresource (AbleToScale). Its
    maxReplicas is lowered to 2, the most the suite's capacity check allows for."""
    hpa: dict[str, Any] = yaml.safe_load(HPA.read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == model.name
    hpa["spec"]["maxReplicas"] = 2
    kubectl.apply(yaml.safe_dump(hpa), namespace=model.namespace)
    try:

        def able_to_scale() -> bool:
            found = kubectl.json("get", "hpa", model.name, "-n", model.namespace)
            conditions = found.get("status", {}).get("conditions", [])
            return any(c["type"] == "AbleToScale" and c["status"] == "True" for c in conditions)

        wait_until("the HPA able to scale it", able_to_scale, timeout=300, every=5)
    finally:
        kubectl("delete", "hpa", model.name, "-n", model.namespace, "--ignore-not-found")
    kubectl("scale", "llmdeployment", model.name, "-n", model.namespace, "--replicas=1")
    wait_until(
        "1 ready replica",
        functools.partial(models.ready, kubectl, model, 1),
        timeout=LOAD_TIMEOUT,
        every=5,
    )


def new_revision() -> str:
    """A revision other than `main` that names the same weights: main's current commit."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    repo = MANIFEST["spec"]["model"]["source"].removeprefix("hf://")
    answer = httpx.get(f"https://huggingface.co/api/models/{repo}", timeout=30)
    answer.raise_for_status()
    sha: str = answer.json()["sha"]
    return sha


def test_a_new_revision_rolls_out_without_a_failed_request(
    model: Model, kubectl: Kubectl, gateway_url: str
) -> None:
    revision = new_revision()
    with ClientLoop(gateway_url, model.served_name) as loop:
        loop.wait_for_answers(3)
        models.patch(kubectl, model, {"spec": {"model": {"revision": revision}}})

        def rolled_out() -> bool:
            status = models.status(kubectl, model)
            return status.get("servedRevision") == revision and models.ready(kubectl, model, 1)

        wait_until(f"revision {revision} served", rolled_out, timeout=LOAD_TIMEOUT, every=5)
        loop.wait_for_answers(3)
    loop.assert_no_failure()
    revisions = {
        p["metadata"].get("annotations", {}).get(contract.ANNOTATION_REVISION)
        for p in models.pods(kubectl, model)
    }
    assert revisions == {revision}


def test_a_client_of_its_service_sees_no_failure_during_a_rollout(
    model: Model, kubectl: Kubectl
) -> None:
    """A client inside the cluster calls the model's Service (no gateway, no retries) while
    an engine setting rolls out: the old replica leaves the endpoints before it stops
    answering, so no request fails."""
    before = models.template_hash(kubectl, model)
    with ServiceClient(
        kubectl, model.namespace, CONTROL_PLANE_IMAGE, model.service_url, model.served_name
    ) as service_client:
        service_client.wait_for_answers(5)
        models.patch(kubectl, model, {"spec": {"engine": {"maxModelLen": 2048}}})

        def rolled_out() -> bool:
            new = models.template_hash(kubectl, model)
            return (
                new != before
                and models.ready(kubectl, model, 1)
                and models.pod_template_hashes(kubectl, model) == {new}
            )

        wait_until("the new engine setting rolled out", rolled_out, timeout=LOAD_TIMEOUT, every=5)
        service_client.wait_for_answers(5)
        log = service_client.log()
    assert log.failures == [], (
        f"{len(log.failures)} of {log.successes + len(log.failures)} requests to the "
        f"Service failed during the rollout: {log.failures[:5]}"
    )


def test_deleting_it_removes_its_children(model: Model, kubectl: Kubectl) -> None:
    assert models.children(kubectl, model)
    kubectl(
        "delete", "llmdeployment", model.name, "-n", model.namespace, "--wait=true", timeout=300
    )
    wait_until("the children gone", lambda: models.children(kubectl, model) == [], timeout=300)
