"""Start kopf only once the cluster serves the LLMDeployment API.

kopf finds the resources it watches by discovery as it starts. Watching all
namespaces it also watches CRDs and picks up one created later; watching
chosen namespaces it cannot (a CRD watch needs a cluster-wide permission,
which the namespaced install does not grant, so the operator turns kopf's
scanning off) and never looks again. An operator started before its CRD
(`crds.install: false` with the CRD applied afterwards, or a GitOps tool
applying both at once) would then serve nothing until restarted.

So `modelplane operator` first asks discovery, which every authenticated
client may read without an RBAC rule, until the API is served: every
POLL_SECONDS, saying once a minute what to apply, with the liveness
endpoint answering meanwhile so the kubelet does not restart a process that
is only waiting. Any answer other than "not served" (the API server
unreachable, credentials refused) ends the wait: kopf then starts and reports
the problem as it always has.
"""

from __future__ import annotations

import contextlib
import http.server
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from modelplane.api import contract

POLL_SECONDS: Final = 3.0
REMIND_SECONDS: Final = 60.0
WAITING: Final = (
    f"waiting for the cluster to serve {contract.API_VERSION} {contract.PLURAL}: install the "
    "CRD (helm: crds.install=true; kubectl apply --server-side -f crds/)"
)


def llmdeployments_served(api: Any) -> bool:
    """Whether discovery lists the LLMDeployment resource (a KubeApi); raises on other errors."""
    from modelplane.operator.kube.client import KubeError

    try:
        found = api.request("GET", f"/apis/{contract.API_VERSION}")
    except KubeError as err:
        if err.status == 404:
            return False
        raise
    return any(r.get("name") == contract.PLURAL for r in found.get("resources", []))


def wait_until(
    served: Callable[[], bool],
    *,
    say: Callable[[str], None],
    poll_seconds: float = POLL_SECONDS,
    remind_seconds: float = REMIND_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once `served()` is true, or as soon as it raises (kopf will say why)."""
    started = clock()
    reminded: float | None = None
    while True:
        try:
            if served():
                if reminded is not None:
                    waited = clock() - started
                    say(f"{contract.API_VERSION} {contract.PLURAL} served after {waited:.0f}s")
                return
        except Exception as err:  # any failure is kopf's to report, as it would be
            say(f"cannot tell whether {contract.PLURAL} are served ({err}); starting anyway")
            return
        if reminded is None or clock() - reminded >= remind_seconds:
            say(WAITING)
            reminded = clock()
        sleep(poll_seconds)


class _Alive(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path.startswith("/healthz") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass  # probes every few seconds would drown the one line that matters


@contextlib.contextmanager
def liveness(port: int | None) -> Iterator[None]:
    """Answer 200 on /healthz at `port` (None: nothing) until the block ends."""
    if port is None:
        yield
        return
    # All interfaces, as kopf's own liveness endpoint: the kubelet probes the pod's IP.
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), _Alive)
    thread = threading.Thread(target=server.serve_forever, name="liveness-while-waiting")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def wait_for_llmdeployment_api(health_port: int | None) -> None:
    """Block until the cluster serves LLMDeployments (see the module docstring)."""
    from modelplane.operator.kube.client import KubeApi

    def say(message: str) -> None:
        print(f"modelplane operator: {message}", file=sys.stderr, flush=True)

    try:
        api = KubeApi.from_environment()
    except Exception as err:  # no credentials here: kopf's login handler reports it
        say(f"cannot reach the cluster to look for {contract.PLURAL} ({err}); starting anyway")
        return
    try:
        with liveness(health_port):
            wait_until(lambda: llmdeployments_served(api), say=say)
    finally:
        api.close()
