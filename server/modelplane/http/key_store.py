"""API keys that follow their file: a key added to or removed from the file is valid or
refused within one reload interval, with no restart.

In Kubernetes the file is a mounted Secret. The kubelet updates it in place by
writing the new content into a fresh timestamped directory and swapping the
`..data` symlink to it, so the path the server opened (`keys -> ..data/keys`)
resolves to a different file afterwards. inotify on the path misses that swap,
and an mtime can repeat; so the file is simply read again every few seconds
(default 5) and its content compared by hash: a tmpfs read of a few hundred
bytes. The kubelet's own sync takes up to about a minute, so a revoked key is
refused within a minute of the Secret's update, plus the interval.

Whether keys are required is decided at start and never changes: a reload that
finds the file empty (or only comments) leaves the keys from `MODELPLANE_API_KEYS`
valid, or none, and refuses every other request; it never opens the API. A
file that cannot be read (a swap caught half way, a deleted Secret) keeps the
keys last read and logs why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from modelplane.http.asgi import Scope
from modelplane.http.auth import ENV_VAR, key_is_valid, presented_key

log = logging.getLogger("modelplane.http.keys")

DEFAULT_RELOAD_INTERVAL_S: Final = 5.0


def _keys_in(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def _unique(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k for k in keys if k and not k.startswith("#")))


class ApiKeys:
    """The keys requests may present: the file's (re-read by `reload`) and the environment's."""

    def __init__(self, key_file: Path | None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.path = key_file
        self._env_keys = _unique([p.strip() for p in env.get(ENV_VAR, "").split(",")])
        self._file_keys: tuple[str, ...] = ()
        self._digest = b""
        if key_file is not None:
            try:
                text = key_file.read_text()
            except OSError as err:
                raise ValueError(f"cannot read API key file {key_file}: {err.strerror}") from err
            self._file_keys = _unique(_keys_in(text))
            self._digest = hashlib.sha256(text.encode()).digest()
            if not self._file_keys:
                raise ValueError(f"API key file {key_file} holds no key")
        self._keys = _unique([*self._file_keys, *self._env_keys])
        self.required = bool(self._keys)

    @staticmethod
    def fixed(keys: Sequence[str]) -> ApiKeys:
        """Keys given in code (tests, local mode): nothing to reload."""
        store = ApiKeys(None, {})
        store._keys = _unique(keys)
        store.required = bool(store._keys)
        return store

    @property
    def current(self) -> tuple[str, ...]:
        return self._keys

    def allows(self, scope: Scope) -> bool:
        """Whether the request may pass: any request when no key is required."""
        return not self.required or key_is_valid(presented_key(scope), self._keys)

    def reload(self) -> bool:
        """Read the file again; True when the valid keys changed."""
        if self.path is None:
            return False
        try:
            text = self.path.read_text()
        except (OSError, ValueError) as err:  # ValueError: bytes that are not text
            reason = err.strerror if isinstance(err, OSError) else str(err)
            log.warning(
                "cannot read the API key file; keeping the keys read before: %s",
                reason,
                extra={"path": str(self.path)},
            )
            return False
        digest = hashlib.sha256(text.encode()).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        file_keys = _unique(_keys_in(text))
        if not file_keys:
            log.warning(
                "the API key file holds no key: only keys from %s stay valid",
                ENV_VAR,
                extra={"path": str(self.path)},
            )
        keys = _unique([*file_keys, *self._env_keys])
        changed = keys != self._keys
        self._file_keys, self._keys = file_keys, keys
        if changed:
            log.info("API keys reloaded", extra={"path": str(self.path), "keys": len(self._keys)})
        return changed

    async def watch(self, interval_s: float = DEFAULT_RELOAD_INTERVAL_S) -> None:
        """Reload every `interval_s` until cancelled (nothing to do without a file)."""
        if self.path is None:
            return
        while True:
            await asyncio.sleep(interval_s)
            self.reload()
