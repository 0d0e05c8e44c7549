"""API keys: where they come from and how a request is checked against them.

Keys come from a file (one per line, `#` comments allowed) and/or the
`MODELPLANE_API_KEYS` environment variable (comma-separated). Several keys
may be valid at once, so a key can be rotated without downtime.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from modelplane.http.asgi import Scope, header

ENV_VAR = "MODELPLANE_API_KEYS"


def load_api_keys(key_file: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """All configured keys, file first, then the environment; duplicates dropped."""
    env = os.environ if environ is None else environ
    keys: list[str] = []
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as err:
            raise ValueError(f"cannot read API key file {key_file}: {err.strerror}") from err
        keys += [line.strip() for line in text.splitlines()]
    keys += [part.strip() for part in env.get(ENV_VAR, "").split(",")]
    found = tuple(dict.fromkeys(k for k in keys if k and not k.startswith("#")))
    if key_file is not None and not found:
        raise ValueError(f"API key file {key_file} holds no key")
    return found


def presented_key(scope: Scope) -> str | None:
    """The bearer token of `Authorization`, or the `api-key` header (Azure-style clients)."""
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    alt = header(scope, b"api-key")
    return alt.decode("latin-1").strip() if alt else None


def key_is_valid(presented: str | None, keys: Sequence[str]) -> bool:
    """Constant-time check against every key, so timing does not reveal which one matched."""
    if presented is None:
        return False
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched
