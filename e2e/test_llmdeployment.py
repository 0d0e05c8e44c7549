"""One LLMDeployment's life on a real cluster, as a user lives it (`make e2e`).

The CPU sample (manifests/samples/smollm2-cpu.yaml) is applied to a cluster
where the chart runs the operator and the gateway. The tests run in this
order on that one model: it becomes Ready, answers through its own Service
and through the gateway (the OpenAI client, over `kubectl port-forward`),
scales up and down through the scale subresource, rolls out a new revision
while a client keeps calling it through the gateway without a single failed
request, and takes its children with it when deleted.

The kind node needs room for two replicas of the sample (2 CPUs and 8 GiB
each) and the cluster must reach huggingface.co to download the model.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from e2e.environment import REPO
from e2e.kube import Kubectl, port_forward, wait_until

SAMPLE = REPO / "manifests" / "samples" / "smollm2-cpu.yaml"
MANIFEST: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
NAME: str = MANIFEST["metadata"]["name"]
MODEL: str = MANIFEST["spec"]["model"].get("servedName", NAME)
REVISION_ENV = "MODELPLANE_E2E_REVISION"
CHILD_KINDS = "deployments,services,configmaps,poddisruptionbudgets,networkpolicies"
LOAD_TIMEOUT = 30 * 60  # the first start pulls the model from the Hub
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def llmd(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl.json("get", "llmdeployment", NAME, "-n", namespace)
    return found


def children(kubectl: Kubectl, namespace: str) -> list[str]:
    selector = f"modelplane.io/llmdeployment={NAME}"
    out = kubectl("get", CHILD_KINDS, "-n", namespace, "-l", selector, "-o", "name")
    return out.split()


def ready(kubectl: Kubectl, namespace: str, replicas: int) -> bool:
    status = llmd(kubectl, namespace).get("status", {})
    return bool(status.get("phase") == "Ready" and status.get("readyReplicas") == replicas)


def client(base_url: str) -> OpenAI:
    # No client-side retries: a request that fails must be seen failing.
    return OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(release: str, kubectl: Kubectl) -> Iterator[str]:
    """The sample, applied and Ready; deleted afterwards if a test has not done it."""
    kubectl.apply(SAMPLE.read_text(), release)
    wait_until(f"{NAME} Ready", lambda: ready(kubectl, release, 1), timeout=LOAD_TIMEOUT, every=5)
    yield release
    kubectl("delete", "llmdeployment", NAME, "-n", release, "--ignore-not-found", timeout=300)


def test_it_becomes_ready_with_its_children_and_endpoint(model: str, kubectl: Kubectl) -> None:
    status = llmd(kubectl, model)["status"]
    assert status["endpoint"] == f"http://{NAME}.{model}.svc:8000/v1"
    assert status["servedRevision"] == MANIFEST["spec"]["model"].get("revision", "main")
    kinds = {name.split("/")[0].split(".")[0] for name in children(kubectl, model)}
    assert kinds == {
        "deployment",
        "service",
        "configmap",
        "poddisruptionbudget",
        "networkpolicy",
    }


def test_it_answers_through_its_service(model: str, kubectl: Kubectl) -> None:
    with port_forward(kubectl, model, f"svc/{NAME}", 8000) as url:
        openai = client(url)
        assert [m.id for m in openai.models.list()] == [MODEL]
        reply = openai.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=16, temperature=0
        )
        assert reply.choices[0].message.content


def test_it_answers_through_the_gateway(model: str, gateway_url: str) -> None:
    openai = client(gateway_url)
    wait_until(
        "the gateway to list the model",
        lambda: MODEL in [m.id for m in openai.models.list()],
        timeout=120,
    )
    stream = openai.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip()


def test_it_scales_through_the_scale_subresource(model: str, kubectl: Kubectl) -> None:
    for replicas in (2, 1):
        kubectl("scale", "llmdeployment", NAME, "-n", model, f"--replicas={replicas}")
        wait_until(
            f"{replicas} ready replicas",
            functools.partial(ready, kubectl, model, replicas),
            timeout=LOAD_TIMEOUT,
            every=5,
        )
        deployment = kubectl.json("get", "deployment", NAME, "-n", model)
        assert deployment["spec"]["replicas"] == replicas


HPA = REPO / "manifests" / "autoscaling" / "hpa.yaml"


def test_an_hpa_can_scale_it(model: str, kubectl: Kubectl) -> None:
    """The HPA controller reads the LLMDeployment's scale subresource (AbleToScale)."""
    kubectl.apply(HPA.read_text(), namespace=model)
    try:

        def able_to_scale() -> bool:
            hpa = kubectl.json("get", "hpa", NAME, "-n", model)
            conditions = hpa.get("status", {}).get("conditions", [])
            return any(c["type"] == "AbleToScale" and c["status"] == "True" for c in conditions)

        wait_until("the HPA able to scale it", able_to_scale, timeout=300, every=5)
    finally:
        kubectl("delete", "hpa", NAME, "-n", model, "--ignore-not-found")


class ClientLoop:
    """Clients calling the model through the gateway until stopped, recording every failure."""

    def __init__(self, base_url: str, clients: int = 2) -> None:
        self._openai = client(base_url)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.successes = 0
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self._openai.chat.completions.create(
                    model=MODEL,
                    messages=QUESTION,
                    max_tokens=8,
                    temperature=0,
                )
                ok = bool(reply.choices and reply.choices[0].message.content is not None)
                outcome = None if ok else f"empty answer: {reply!r}"
            except Exception as err:  # every failure counts, whatever its kind
                outcome = f"{type(err).__name__}: {err}"
            with self._lock:
                if outcome is None:
                    self.successes += 1
                else:
                    self.failures.append(outcome)

    def served(self) -> int:
        with self._lock:
            return self.successes


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
    model: str, kubectl: Kubectl, gateway_url: str
) -> None:
    revision = new_revision()
    with ClientLoop(gateway_url) as loop:
        wait_until("the first answers", lambda: loop.served() >= 3, timeout=120, every=0.5)
        patch = json.dumps({"spec": {"model": {"revision": revision}}})
        kubectl("patch", "llmdeployment", NAME, "-n", model, "--type=merge", "-p", patch)

        def rolled_out() -> bool:
            status = llmd(kubectl, model).get("status", {})
            return status.get("servedRevision") == revision and ready(kubectl, model, 1)

        wait_until(f"revision {revision} served", rolled_out, timeout=LOAD_TIMEOUT, every=5)
        after = loop.served()
        wait_until("answers from the new revision", lambda: loop.served() >= after + 3,
                   timeout=120, every=0.5)  # fmt: skip
    assert loop.failures == [], f"{len(loop.failures)} failed requests: {loop.failures[:5]}"
    pods = kubectl.json("get", "pods", "-n", model, "-l", f"modelplane.io/llmdeployment={NAME}")
    revisions = {p["metadata"].get("annotations", {}).get("modelplane.io/revision")
                 for p in pods["items"] if not p["metadata"].get("deletionTimestamp")}  # fmt: skip
    assert revisions == {revision}


def test_deleting_it_removes_its_children(model: str, kubectl: Kubectl) -> None:
    assert children(kubectl, model)
    kubectl("delete", "llmdeployment", NAME, "-n", model, "--wait=true", timeout=300)
    wait_until("the children gone", lambda: children(kubectl, model) == [], timeout=300)
