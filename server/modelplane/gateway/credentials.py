"""Credentials at the gateway: the client's stay with the gateway, each model's go to its replicas.

A client's API key proves who the client is to the gateway and to nobody
else: it is never copied upstream, where a replica (or anything discovery
took for one) could collect it. The gateway authenticates to a model's
replicas with that model's own key, read from the LLMDeployment's
`auth.apiKeySecretRef` (Kubernetes discovery) or a static model's
`upstreamApiKeyFile`: the first key line of what they hold, in the format
of the server's key files (one key per line, `#` comments).
"""

from __future__ import annotations

from pathlib import Path

from modelplane.http.asgi import Scope

# Request headers that carry a client's credential: never forwarded.
CLIENT_CREDENTIAL_HEADERS = frozenset({b"authorization", b"api-key", b"x-api-key", b"cookie"})
# Headers a key is read from (modelplane.http.auth.presented_key): one of each at most.
_SINGLE_KEY_HEADERS = (b"authorization", b"api-key")


def repeated_credential_header(scope: Scope) -> str | None:
    """The name of a key header the request sends more than once, else None.

    Two `Authorization` headers leave it open which one a check reads and
    which one a proxy or replica further on reads; such a request is refused.
    """
    for name in _SINGLE_KEY_HEADERS:
        if sum(1 for key, _ in scope["headers"] if key == name) > 1:
            return name.decode()
    return None


def first_key(text: str) -> str | None:
    """The first key of a key file's text: its first line that is neither blank nor a comment."""
    for line in text.splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            return key
    return None


def read_key_file(path: Path) -> str:
    """The key to send upstream, from a file; ValueError saying why there is none."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read upstream API key file {path}: {reason}") from err
    key = first_key(text)
    if key is None:
        raise ValueError(f"upstream API key file {path} holds no key")
    return key
