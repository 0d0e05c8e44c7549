"""uvicorn under the program's own stop signals, for the model server and the gateway.

Both drain on SIGTERM (readiness goes false, requests in flight finish, then
exit), so uvicorn must not install its own handlers: `SignalFreeServer` runs
uvicorn without them and `install_stop_signals` sets an event the program's
drain waits on. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

log = logging.getLogger("modelplane.http")


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its own signal handling: the drain owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second Ctrl-C exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and sig is signal.SIGINT:
            log.warning("second interrupt: exiting without waiting")
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
