"""Each model's own API key, read from the Secret its LLMDeployment names.

The gateway sends a model's replicas the key they require
(`auth.apiKeySecretRef`: the first key line of that Secret's key, in the
server's key-file format), never the client's. It reads each Secret by name
with `get` -- no `list` or `watch` of Secrets, so its RBAC lets it read only
what it asks for by name, and never enumerate the namespace's Secrets -- and
reads every one again each refresh interval, so a rotated or revoked key
takes effect within it.

A Secret that is gone, forbidden, or has no such key makes the model's
requests 503 (its replicas would refuse them) and is logged. A failure that
says nothing about the key (a timeout, the API server's 5xx) keeps the key
read last.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.gateway.credentials import first_key
from modelplane.gateway.discovery.ownership import SecretRef

# (connect, read) seconds of each Secret read.
REQUEST_TIMEOUT: Final = (5.0, 10.0)


@dataclass(frozen=True)
class KeyReading:
    key: str | None = field(default=None, repr=False)
    problem: str | None = None  # why there is no key
    transient: bool = False  # the problem says nothing about the key: keep the last one


def key_from_secret(data: Mapping[str, Any] | None, ref: SecretRef) -> KeyReading:
    """The key a Secret's `data` (base64 values, as the API serves them) holds at `ref.key`."""
    where = f"Secret {ref.namespace}/{ref.name}"
    encoded = (data or {}).get(ref.key)
    if not isinstance(encoded, (str, bytes)):
        return KeyReading(problem=f"{where} has no key {ref.key!r}")
    try:
        text = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return KeyReading(problem=f"{where} key {ref.key!r} is not UTF-8 text")
    key = first_key(text)
    if key is None:
        return KeyReading(problem=f"{where} key {ref.key!r} holds no API key")
    return KeyReading(key=key)


def read_secret_key(api: Any, ref: SecretRef) -> KeyReading:
    """GET the Secret (thread side: the official client blocks) and take its key."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    where = f"Secret {ref.namespace}/{ref.name}"
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            ref.name, ref.namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as err:
        if err.status == 404:
            return KeyReading(problem=f"{where} does not exist")
        if err.status in (401, 403):
            return KeyReading(
                problem=f"the gateway may not read {where} (its RBAC: get on secrets)"
            )
        return KeyReading(problem=f"reading {where}: HTTP {err.status}", transient=True)
    except Exception as err:  # timeouts, connection errors, a body that is not JSON
        return KeyReading(problem=f"reading {where}: {err.__class__.__name__}", transient=True)
    return key_from_secret(secret.data, ref)


def merge_readings(
    known: Mapping[SecretRef, KeyReading], fresh: Mapping[SecretRef, KeyReading]
) -> dict[SecretRef, KeyReading]:
    """`known` updated by `fresh`, except that a transient failure keeps a key read before."""
    merged = dict(known)
    for ref, reading in fresh.items():
        previous = known.get(ref)
        if reading.transient and previous is not None and previous.key is not None:
            continue
        merged[ref] = reading
    return merged


SecretReader = Callable[[Any, SecretRef], KeyReading]
