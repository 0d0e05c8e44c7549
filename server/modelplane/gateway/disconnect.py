"""Cancel the work of a request when its client goes away.

uvicorn's `send` silently drops messages once the client has disconnected,
so a proxy that only writes would keep a replica generating tokens for
nobody. Once the request body has been read, the next `receive()` returns
only when the client disconnects or the response is complete; a small task
waits for it and cancels the request's task if the response was not done.
Cancelling closes the upstream connection, which makes the model server
abort the generation.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from modelplane.http.asgi import Message, Receive, Send


class CancelOnDisconnect:
    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._finished = False
        self.client_gone = False
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CancelOnDisconnect:
        self._task = asyncio.current_task()
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._finished and self._task is not None:
            self.client_gone = True
            self._task.cancel()

    def wrap(self, send: Send) -> Send:
        """`send` that notes when the last byte of the response goes out."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._finished = True
            await send(message)

        return wrapped

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._finished = True
        if self._watcher is not None:
            self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self.client_gone and self._task is not None:
            self._task.uncancel()
            return True
        return False
