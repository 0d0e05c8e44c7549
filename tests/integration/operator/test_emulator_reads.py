"""The emulated API server's lists and watches: selected by label, paged, as Kubernetes does.

The operator's tests trust KMock's emulator (tests/support/kube_emulator.py)
to answer lists and watches as an API server would; these tests hold it to
that over HTTP, with no operator running.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.kube_emulator import EmulatorThread, Kubectl


@pytest.fixture
def api() -> Iterator[tuple[EmulatorThread, Kubectl, httpx.Client]]:
    with EmulatorThread() as emulator:
        kubectl = Kubectl(emulator.url)
        with httpx.Client(base_url=emulator.url, timeout=10) as client:
            yield emulator, kubectl, client
        kubectl.close()


def config_map(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def names(listing: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listing["items"]]


def test_a_list_comes_in_pages_in_key_order(
    api: tuple[EmulatorThread, Kubectl, httpx.Client],
) -> None:
    _, kubectl, client = api
    for i in range(5):
        kubectl.create("configmaps", config_map(f"cm-{i}", "b" if i % 2 else "a", tier="web"))
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        listing = client.get("/api/v1/configmaps", params=params).json()
        assert listing["kind"] == "ConfigMapList"
        pages.append(names(listing))
        token = listing["metadata"].get("continue")
        if not token:
            break
        assert listing["metadata"]["remainingItemCount"] == 5 - sum(map(len, pages))
        params = {"limit": 2, "continue": token}
    # Namespace, then name: a/cm-0, a/cm-2, a/cm-4, b/cm-1, b/cm-3.
    assert pages == [["cm-0", "cm-2"], ["cm-4", "cm-1"], ["cm-3"]]
    assert names(client.get("/api/v1/configmaps").json()) == [
        "cm-0",
        "cm-2",
        "cm-4",
        "cm-1",
        "cm-3",
    ]


def test_a_list_selects_by_label(api: tuple[EmulatorThread, Kubectl, httpx.Client]) -> None:
    _, kubectl, client = api
    kubectl.create("configmaps", config_map("web", "a", tier="web", owner="me"))
    kubectl.create("configmaps", config_map("db", "a", tier="db", owner="me"))
    kubectl.create("configmaps", config_map("other", "a", tier="web"))

    def selected(selector: str, **params: Any) -> list[str]:
        response = client.get("/api/v1/configmaps", params={"labelSelector": selector, **params})
        return names(response.json())

    assert selected("owner=me") == ["db", "web"]
    assert selected("owner,tier in (web)") == ["web"]
    assert selected("tier!=db") == ["other", "web"]
    assert selected("!owner") == ["other"]
    assert selected("owner=me", limit=1) == ["db"]
    # The API server cannot count what a selector would select next.
    page = client.get("/api/v1/configmaps", params={"labelSelector": "owner", "limit": 1}).json()
    assert page["metadata"]["continue"] and "remainingItemCount" not in page["metadata"]


@pytest.mark.parametrize(
    "params",
    [
        {"labelSelector": "tier in (web"},
        {"labelSelector": "tier in (web", "watch": "true"},
        {"continue": "not-a-token"},
        {"limit": "many"},
    ],
)
def test_bad_reads_get_the_api_servers_400(
    api: tuple[EmulatorThread, Kubectl, httpx.Client], params: dict[str, str]
) -> None:
    _, _, client = api
    response = client.get("/api/v1/configmaps", params=params)
    assert response.status_code == 400
    assert response.json()["reason"] == "BadRequest"


def test_a_watch_tells_when_an_object_enters_or_leaves_its_selector(
    api: tuple[EmulatorThread, Kubectl, httpx.Client],
) -> None:
    emulator, kubectl, _ = api
    kubectl.create("configmaps", config_map("mine", "a", owner="me"))
    kubectl.create("configmaps", config_map("theirs", "a", owner="them"))
    kubectl.create("configmaps", config_map("elsewhere", "b", owner="me"))
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    streams: queue.Queue[httpx.Response] = queue.Queue()

    def watch() -> None:
        params = {"watch": "true", "labelSelector": "owner=me"}
        url = f"{emulator.url}/api/v1/namespaces/a/configmaps"
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("GET", url, params=params, timeout=None) as stream,
        ):
            streams.put(stream)
            for line in stream.iter_lines():
                if line.strip():
                    event = json.loads(line)
                    events.put((event["type"], event["object"]["metadata"]["name"]))

    threading.Thread(target=watch, daemon=True).start()
    stream = streams.get(timeout=10)
    assert events.get(timeout=10) == ("ADDED", "mine")
    label = "v1", "configmaps", "a"
    kubectl.patch(*label, "theirs", {"metadata": {"labels": {"owner": "me"}}})
    assert events.get(timeout=10) == ("ADDED", "theirs")
    kubectl.patch(*label, "mine", {"metadata": {"labels": {"extra": "yes"}}})
    assert events.get(timeout=10) == ("MODIFIED", "mine")
    kubectl.patch(*label, "mine", {"metadata": {"labels": {"owner": None}}})
    assert events.get(timeout=10) == ("DELETED", "mine")
    kubectl.patch(*label, "mine", {"metadata": {"labels": {"extra": "again"}}})  # not selected
    kubectl.patch("v1", "configmaps", "b", "elsewhere", {"metadata": {"labels": {"x": "1"}}})
    kubectl.delete(*label, "theirs")
    assert events.get(timeout=10) == ("DELETED", "theirs")
    assert events.empty()
    stream.close()  # the emulator stops only once its watches are closed


def test_reads_are_recorded_with_what_they_asked_for(
    api: tuple[EmulatorThread, Kubectl, httpx.Client],
) -> None:
    emulator, _, client = api
    client.get("/api/v1/namespaces/a/pods", params={"labelSelector": "app=web", "limit": 50})
    client.get("/api/v1/pods")
    client.get("/api/v1")  # discovery is not a read of a kind
    reads = emulator.reads()
    assert [(r.verb, r.plural, r.namespace, r.label_selector, r.limit) for r in reads] == [
        ("list", "pods", "a", "app=web", 50),
        ("list", "pods", None, "", None),
    ]
