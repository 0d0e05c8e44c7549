"""`modelplane operator` waits for the LLMDeployment API: what it says, and when it stops waiting.

The loop runs on a fake clock here; the whole command, against the
emulator, is tests/integration/operator/test_operator_crd_later.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from modelplane.operator.api_wait import WAITING, liveness, wait_until
from tests.conftest import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def answers(*values: bool | Exception) -> Iterator[bool]:
    for value in values:
        if isinstance(value, Exception):
            raise value
        yield value


def run(*values: bool | Exception) -> tuple[list[str], float]:
    clock, said = Clock(), list[str]()
    found = answers(*values)
    wait_until(lambda: next(found), say=said.append, poll_seconds=3, sleep=clock.sleep, clock=clock)
    return said, clock.now


def test_an_api_already_served_starts_at_once_and_quietly() -> None:
    assert run(True) == ([], 0)


def test_the_wait_says_what_to_install_once_a_minute_then_that_it_is_over() -> None:
    said, waited = run(*[False] * 45, True)  # 45 polls of 3 s
    assert waited == 135
    assert said[:3] == [WAITING] * 3  # at 0, 60 and 120 s
    assert said[3] == "modelplane.io/v1alpha1 llmdeployments served after 135s"
    assert len(said) == 4
    assert "kubectl apply --server-side -f crds/" in WAITING and "crds.install" in WAITING


def test_any_other_failure_ends_the_wait_for_kopf_to_report() -> None:
    said, _ = run(False, PermissionError("HTTP 401: Unauthorized"))
    assert said[-1] == (
        "cannot tell whether llmdeployments are served (HTTP 401: Unauthorized); starting anyway"
    )


def test_the_liveness_endpoint_answers_while_waiting_and_frees_its_port() -> None:
    port = free_port()
    with liveness(port):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    with liveness(port):  # kopf binds the same port next
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
