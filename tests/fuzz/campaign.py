"""Fuzz the OpenAI routes of a real model server and the gateway in front of it.

    python -m tests.fuzz.campaign --model .models/smollm2-135m-instruct --seconds 240

schemathesis turns the OpenAPI document of `tests.fuzz.openai_schema` (vLLM's
own request models) into hypothesis strategies, in both of its modes:
positive (requests the schema allows, within cost caps) and negative
(requests that break it: wrong types, missing fields, bodies that are not
JSON). Each generated request goes, in turn, to the model server and to the
gateway (each with its valid API key, but every seventh with a wrong one),
and every answer is judged:

- a status of 500 or above other than 503 is a server error;
- an error status whose body is not the OpenAI envelope
  (`{"error": {"message": str, "type": str, ...}}`) is an envelope violation;
- a 200 event stream must end with `data: [DONE]`, a Responses API stream with
  its `response.completed` (or `.incomplete`, `.failed`) event (every third
  request that does not say whether to stream asks for a stream);
- no HTTP answer at all (a dropped connection, no answer in `--request-timeout`
  seconds), or a process of the stack that exits or stops answering /health,
  is a crash.

The campaign stops after `--cases` cases or `--seconds` seconds, prints
every finding with a curl command that replays it, a table of statuses, and
last the line `cases=<n> server_5xx=<n> gateway_5xx=<n> crashes=<n>`; it
exits 1 when anything was found (envelope violations included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable

from tests.fuzz.openai_schema import openai_schema
from tests.fuzz.stack import SERVED_NAME, Stack, StackError, running_stack

SERVER, GATEWAY = "server", "gateway"
# Generated values in this range would only make the engine generate for long, not
# exercise anything new: they are clamped to the cap (larger values are left as they
# are: the server must refuse them at once).
CLAMPS: Final = {
    "max_tokens": 8, "max_completion_tokens": 8, "max_output_tokens": 8, "min_tokens": 4,
    "n": 2, "best_of": 2,
}  # fmt: skip
# The events a Responses API stream may end with (it has no `data: [DONE]`).
RESPONSES_ENDS: Final = (b"response.completed", b"response.incomplete", b"response.failed")
CLAMP_BELOW: Final = 4096
BATCH: Final = 8  # cases per hypothesis run before moving to the next operation


def clamp_cost(body: Any, *, stream: bool = False) -> Any:
    """The body with generation lengths and counts that are merely slow brought to the caps;
    with `stream`, a body that does not say whether to stream asks for a stream."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    if stream and "stream" not in out:
        out["stream"] = True
    for key, cap in CLAMPS.items():
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and cap < value <= CLAMP_BELOW:
            out[key] = cap
    return out


def envelope_problem(
    status: int, content_type: str, body: bytes, path: str = "/v1/chat/completions"
) -> str | None:
    """What is wrong with an answer's body for its status, or None."""
    if status >= 400:
        try:
            payload = json.loads(body)
        except ValueError:
            return f"{status} with a body that is not JSON: {body[:120]!r}"
        error = payload.get("error") if isinstance(payload, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("message"), str)
            and isinstance(error.get("type"), str)
        ):
            return f"{status} outside the OpenAI error envelope: {body[:160]!r}"
        return None
    if status >= 300:
        return f"a {status} redirect"
    streamed = content_type.startswith("text/event-stream")
    if streamed and path == "/v1/responses":
        last = body.rstrip().rpartition(b"\n\n")[2]
        if not last.startswith(tuple(b"event: " + end for end in RESPONSES_ENDS)):
            return f"a Responses stream that does not end with its last event: ...{body[-120:]!r}"
        return None
    if streamed and not body.rstrip().endswith(b"data: [DONE]"):
        return f"a stream that does not end with data: [DONE]: ...{body[-120:]!r}"
    return None


@dataclass
class Finding:
    kind: str  # "5xx", "envelope", "crash"
    target: str
    label: str
    detail: str
    curl: str


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def count(self, kind: str, target: str | None = None) -> int:
        return sum(1 for f in self.findings if f.kind == kind and target in (None, f.target))

    def summary(self) -> str:
        return (
            f"cases={self.cases} server_5xx={self.count('5xx', SERVER)} "
            f"gateway_5xx={self.count('5xx', GATEWAY)} crashes={self.count('crash')}"
        )


class CampaignOverError(Exception):
    """The case or time budget is spent (raised through hypothesis to end a run)."""


@dataclass
class Campaign:
    stack: Stack
    max_cases: int
    deadline: float
    request_timeout_s: float = 60.0
    tally: Tally = field(default_factory=Tally)
    log: Callable[[str], None] = print
    verbose: bool = False

    def __post_init__(self) -> None:
        self._http = httpx.Client(timeout=self.request_timeout_s)
        self._targets = {
            SERVER: (self.stack.server.url, self.stack.server_key),
            GATEWAY: (self.stack.gateway.url, self.stack.gateway_key),
        }

    def close(self) -> None:
        self._http.close()

    def send(self, case: Any) -> None:
        if self.tally.cases >= self.max_cases or time.monotonic() > self.deadline:
            raise CampaignOverError
        target = (SERVER, GATEWAY)[self.tally.cases % 2]
        self.tally.cases += 1
        base, key = self._targets[target]
        request = case.as_transport_kwargs(base_url=base)
        # Every seventh request carries a wrong key: its refusal must be an envelope too.
        credential = key if self.tally.cases % 7 != 5 else f"{key}-wrong"
        headers = {**request.get("headers", {}), "Authorization": f"Bearer {credential}"}
        headers.pop("X-Schemathesis-TestCaseId", None)
        content: bytes | None = None
        if "json" in request:
            # Every third request that does not say is streamed: the generator rarely
            # picks `stream` among so many optional fields, and streams fail differently.
            body = clamp_cost(request["json"], stream=self.tally.cases % 3 == 0)
            content = json.dumps(body).encode()
        elif request.get("data") is not None:
            data = request["data"]
            content = data if isinstance(data, bytes) else str(data).encode()
        curl = _curl(request["method"], request["url"], headers, content)
        label = f"{request['method']} {case.path}"
        try:
            response = self._http.request(
                request["method"], request["url"], params=request.get("params") or None,
                headers=headers, content=content,
            )  # fmt: skip
        except httpx.TransportError as err:
            self._found("crash", target, label, f"no answer: {type(err).__name__}: {err}", curl)
            return
        status = response.status_code
        self.tally.statuses[target, label, status] += 1
        if self.verbose:
            self.log(f"{target} {label} {status} {response.content[:200]!r} <- {content!r:.300}")
        if status >= 500 and status != 503:
            self._found("5xx", target, label, f"{status}: {response.content[:300]!r}", curl)
            return
        problem = envelope_problem(status, response.headers.get("content-type", ""),
                                   response.content, case.path)  # fmt: skip
        if problem is not None:
            self._found("envelope", target, label, problem, curl)

    def _found(self, kind: str, target: str, label: str, detail: str, curl: str) -> None:
        self.tally.findings.append(Finding(kind, target, label, detail, curl))
        self.log(f"FOUND {kind} at the {target}: {label}: {detail}\n  {curl[:2000]}")

    def check_processes(self) -> None:
        for process in self.stack.processes():
            healthy = False
            if process.alive():
                try:
                    healthy = self._http.get(f"{process.url}/health", timeout=10).status_code == 200
                except httpx.TransportError:
                    healthy = False
            if not healthy:
                target = SERVER if process is self.stack.server else GATEWAY
                self._found("crash", target, "GET /health", f"{process.name} is down:\n"
                            f"{process.tail()}", "")  # fmt: skip
                raise CampaignOverError

    def run(self, random_seed: int) -> Tally:
        """Round-robin over the operations and modes, BATCH cases each, until done."""
        from schemathesis import openapi
        from schemathesis.core.result import Err
        from schemathesis.generation import GenerationMode

        schema = openapi.from_dict(openai_schema(SERVED_NAME))
        operations = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # the document is ours: a broken one is a bug here
                raise result.err()
            operations.append(result.ok())
        runs = [(op, mode) for op in operations for mode in GenerationMode]
        exhausted: set[int] = set()
        round_number = 0
        try:
            while len(exhausted) < len(runs):
                for index, (operation, mode) in enumerate(runs):
                    if index in exhausted:
                        continue
                    try:
                        self._batch(operation.as_strategy(generation_mode=mode),
                                    random_seed + round_number * 1000 + index)  # fmt: skip
                    except Unsatisfiable:
                        exhausted.add(index)  # e.g. GET /v1/models has nothing to break
                round_number += 1
                self.check_processes()
        except CampaignOverError:
            pass
        if not any(f.kind == "crash" and f.label == "GET /health" for f in self.tally.findings):
            with contextlib.suppress(CampaignOverError):
                self.check_processes()
        return self.tally

    def _batch(self, strategy: Any, run_seed: int) -> None:
        @seed(run_seed)
        @settings(
            max_examples=BATCH, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(strategy)
        def one(case: Any) -> None:
            self.send(case)

        one()


def _curl(method: str, url: str, headers: dict[str, str], body: bytes | None) -> str:
    parts = ["curl", "-sS", "-X", method, url]
    for name, value in headers.items():
        if name.lower() in ("user-agent", "accept-encoding", "connection", "accept"):
            continue
        parts += ["-H", f"{name}: {value}"]
    if body is not None:
        parts += ["--data-binary", body.decode("utf-8", errors="backslashreplace")]
    return shlex.join(parts)


def report(tally: Tally, out: Callable[[str], None] = print) -> None:
    out("status counts (target, request, status: count):")
    for (target, label, status), count in sorted(tally.statuses.items()):
        out(f"  {target:8} {label:28} {status}: {count}")
    out(f"envelope_violations={tally.count('envelope')}")
    out(tally.summary())


def iter_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the local model directory")
    parser.add_argument("--cases", type=int, default=100_000, help="at most this many cases")
    parser.add_argument("--seconds", type=float, default=240, help="at most this long fuzzing")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="hypothesis seed")
    parser.add_argument("--work", type=Path, help="folder for keys and logs (default: temp)")
    parser.add_argument("--verbose", action="store_true", help="print every case and answer")
    return parser.parse_args(argv)


def campaign(model: Path, work: Path, *, cases: int, seconds: float, random_seed: int,
             log: Callable[[str], None] = print, verbose: bool = False) -> Tally:  # fmt: skip
    """Start the stack, fuzz it within the budget, stop it; the tally of what was found."""
    with running_stack(model, work) as stack:
        log(f"fuzzing {stack.server.url} (server) and {stack.gateway.url} (gateway), "
            f"seed {random_seed}, up to {cases} cases / {seconds:g}s")  # fmt: skip
        fuzz = Campaign(stack, cases, time.monotonic() + seconds, log=log, verbose=verbose)
        try:
            return fuzz.run(random_seed)
        finally:
            fuzz.close()


def main(argv: list[str] | None = None) -> int:
    args = iter_args(argv)
    with _work_dir(args.work) as work:
        try:
            tally = campaign(
                args.model, work, cases=args.cases, seconds=args.seconds,
                random_seed=args.seed, verbose=args.verbose,
            )  # fmt: skip
        except StackError as err:
            print(f"the stack did not start: {err}", file=sys.stderr)
            print("cases=0 server_5xx=0 gateway_5xx=0 crashes=1")
            return 1
    report(tally)
    return 1 if tally.findings else 0


@contextlib.contextmanager
def _work_dir(given_dir: Path | None) -> Iterator[Path]:
    if given_dir is not None:
        yield given_dir
        return
    with tempfile.TemporaryDirectory(prefix="modelplane-fuzz-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
