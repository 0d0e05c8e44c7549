"""The gateway's scale-from-zero signal: a Lease per LLMDeployment, renewed while requests wait.

A model whose Services exist but have no ready endpoint is scaled to zero (or
starting): the gateway holds its requests and, at most once per demand
interval (`admission.demand.DemandThrottle`), records the demand in the
LLMDeployment's demand Lease (`modelplane.api.demand`): when, and how many
requests this gateway replica holds. The operator watches those Leases.

The gateway never writes the LLMDeployment itself (it may only read it, for
the owner reference), and it leaves alone any Lease that is not labelled as
the demand Lease of that LLMDeployment: a Lease of the same name that belongs
to someone else is logged and skipped. A renewal carries the resourceVersion
it read, so it cannot overwrite a Lease that changed hands in between.

The official client is synchronous: each write runs in a worker thread, with
a deadline on every call, so a slow API server delays only the signal, never
the held request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from modelplane.api import contract
from modelplane.api.demand import (
    LEASE_GROUP,
    LEASE_PLURAL,
    LEASE_VERSION,
    demand_lease,
    demand_lease_name,
    demand_renewal,
    is_demand_lease,
    queued_renewal,
)
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute

log = logging.getLogger("modelplane.gateway.demand")

MERGE_PATCH: Final = "application/merge-patch+json"
# (connect, read) seconds of every API call: a signal is worth little after a few seconds.
REQUEST_TIMEOUT: Final = (3.0, 10.0)

ApiClientFactory = Callable[[], Any]


class ForeignLeaseError(RuntimeError):
    """A Lease of the demand Lease's name exists, but it is not labelled as ours."""


class DemandLeases:
    """Records held demand in each of a model's LLMDeployments' demand Leases."""

    def __init__(
        self,
        api_client: ApiClientFactory,
        *,
        hold_seconds: float,
        holder: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.api_client = api_client
        self.hold_seconds = hold_seconds
        self.clock = clock
        self.holder = holder or socket.gethostname()  # in a pod: the pod's name
        self._api: Any = None  # one client (and its connection pool) for every signal

    async def record(self, route: ModelRoute, held: int) -> None:
        """Renew (or create) the demand Lease of every LLMDeployment serving the model."""
        for target in route.demand:
            try:
                await asyncio.to_thread(self.write, target, held)
            except Exception as err:  # the hold goes on; the next request retries
                log.warning(
                    "could not record demand",
                    extra={"model": route.name, "llmdeployment": target.name, "error": str(err)},
                )
            else:
                log.info(
                    "scale from zero requested",
                    extra={"model": route.name, "llmdeployment": target.name, "held": held},
                )

    async def record_queued(self, route: ModelRoute, queued: int) -> None:
        """Record how many requests this replica queues for a saturated model (0: none now)."""
        for target in route.demand:
            try:
                await asyncio.to_thread(self.write_queued, target, queued)
            except Exception as err:  # the queue goes on; the next change retries
                log.warning(
                    "could not record queued demand",
                    extra={"model": route.name, "llmdeployment": target.name, "error": str(err)},
                )

    # ---- thread side -----------------------------------------------------

    def write(self, target: DemandTarget, held: int) -> None:
        """Renew the demand Lease of one LLMDeployment, or create it (blocking; raises)."""
        self._write(
            target, held, demand_renewal(held, self.holder, self.hold_seconds, self.clock())
        )

    def write_queued(self, target: DemandTarget, queued: int) -> None:
        """Set the queued count on the demand Lease (its renewTime untouched: that is the
        scale-from-zero signal), creating the Lease first if there is none (blocking)."""
        self._write(target, 0, queued_renewal(queued, self.clock()))

    def _write(self, target: DemandTarget, held: int, body: dict[str, Any]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._api is None:
            self._api = self.api_client()
        api = self._api
        # The untyped client: the typed Lease model would re-serialise renewTime as it
        # sees fit, and a MicroTime must keep its six digits.
        objects: Any = client.CustomObjectsApi(api)
        lease_of = (LEASE_GROUP, LEASE_VERSION, target.namespace, LEASE_PLURAL)
        name = demand_lease_name(target.name)
        try:
            raw = objects.get_namespaced_custom_object(
                *lease_of, name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status != 404:
                raise
            self._create(objects, target, held, body["metadata"]["annotations"])
            return
        lease = json.loads(raw.data)
        if not is_demand_lease(lease, target.name):
            raise ForeignLeaseError(
                f"Lease {target.namespace}/{name} is not labelled as the demand Lease of "
                f"LLMDeployment {target.name}; left alone"
            )
        # The version read: a Lease that changed in between is not overwritten (409).
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        objects.patch_namespaced_custom_object(
            *lease_of,
            name,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def _create(
        self, objects: Any, target: DemandTarget, held: int, annotations: dict[str, str]
    ) -> None:
        """The first demand of this LLMDeployment: a Lease owned by it, deleted with it."""
        raw = objects.get_namespaced_custom_object(
            contract.GROUP,
            contract.VERSION,
            target.namespace,
            contract.PLURAL,
            target.name,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        uid = json.loads(raw.data)["metadata"]["uid"]
        body = demand_lease(
            target.namespace, target.name, uid, held, self.holder, self.hold_seconds, self.clock()
        )
        body["metadata"]["annotations"].update(annotations)
        objects.create_namespaced_custom_object(
            LEASE_GROUP,
            LEASE_VERSION,
            target.namespace,
            LEASE_PLURAL,
            body,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
