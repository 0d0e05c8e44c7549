"""OpenAI clients on this machine, calling the gateway through `kubectl port-forward`."""

from __future__ import annotations

import threading
from typing import Final

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from e2e.kube import wait_until

QUESTION: Final[list[ChatCompletionMessageParam]] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def client(base_url: str, timeout: float = 120) -> OpenAI:
    # No client-side retries: a request that fails must be seen failing.
    return OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=timeout)


class ClientLoop:
    """Clients calling one model through the gateway until stopped, recording every failure."""

    def __init__(self, base_url: str, model: str, clients: int = 2) -> None:
        self._openai = client(base_url)
        self._model = model
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.successes = 0
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self._openai.chat.completions.create(
                    model=self._model, messages=QUESTION, max_tokens=8, temperature=0
                )
                ok = bool(reply.choices and reply.choices[0].message.content is not None)
                outcome = None if ok else f"empty answer: {reply!r}"
            except Exception as err:  # every failure counts, whatever its kind
                outcome = f"{type(err).__name__}: {err}"
            with self._lock:
                if outcome is None:
                    self.successes += 1
                else:
                    self.failures.append(outcome)

    def served(self) -> int:
        with self._lock:
            return self.successes

    def wait_for_answers(self, count: int, timeout: float = 180) -> None:
        """Until `count` more answers than now have arrived."""
        start = self.served()
        wait_until(
            f"{count} more answers through the gateway",
            lambda: self.served() >= start + count,
            timeout=timeout,
            every=0.5,
        )

    def assert_no_failure(self) -> None:
        with self._lock:
            failures = list(self.failures)
        assert failures == [], f"{len(failures)} failed requests: {failures[:5]}"
