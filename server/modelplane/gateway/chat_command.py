"""`modelplane chat`: a terminal chat with any model behind the gateway (or a server).

Each line you type is a user turn; the answer streams in as it is
generated, followed by its token count, speed and time to first token.
`/reset` starts a new conversation, `/exit` (or Ctrl-D) quits, `/help` lists
the commands; each says what it did. When stdin is not a terminal, every
line is a turn and only the answers go to stdout (statistics and
confirmations go to stderr), so the command also works in pipes and scripts.

By default it talks to the address `make run` serves: http://$HOST:$PORT,
from the same HOST and PORT variables (127.0.0.1 and 8000 when unset).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
KEY_ENV = "MODELPLANE_API_KEY"
COMMANDS = "/reset starts over, /exit quits, /help lists the commands"


def default_url(environ: Mapping[str, str]) -> str:
    """Where `make run` (HOST=... PORT=... make run) serves, from the same variables."""
    host = environ.get("HOST") or DEFAULT_HOST
    if host in ("0.0.0.0", "::"):
        host = DEFAULT_HOST  # `make run` listens everywhere; this machine is one of them
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{environ.get('PORT') or DEFAULT_PORT}"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chat",
        help="Chat with a model in the terminal, streaming the answers.",
        description="Chat with a model over the OpenAI API in the terminal. Type a message "
        "and press Enter; /reset starts over, /exit or Ctrl-D quits.",
    )
    parser.add_argument(
        "--url",
        help="Gateway or server base URL (default: where `make run` serves, "
        f"http://$HOST:$PORT, else http://{DEFAULT_HOST}:{DEFAULT_PORT}).",
    )
    parser.add_argument("--model", help="Model name (default: the only one served, if one).")
    parser.add_argument("--api-key", help=f"API key (default: ${KEY_ENV}).")
    parser.add_argument("--system", help="A system prompt for the conversation.")
    parser.add_argument("--max-tokens", type=int, default=512, help="Longest answer (512).")
    parser.add_argument("--temperature", type=float, help="Sampling temperature.")
    parser.set_defaults(handler=run)


@dataclass
class Answer:
    text: str
    tokens: int
    first_token_s: float | None
    seconds: float

    def stats(self) -> str:
        if self.first_token_s is None:
            return "[no tokens]"
        decode = self.seconds - self.first_token_s
        rate = f"{(self.tokens - 1) / decode:.1f} tokens/s" if self.tokens > 1 and decode else "-"
        return f"[{self.tokens} tokens, {rate}, first token {self.first_token_s * 1000:.0f} ms]"


def sse_data(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of an OpenAI stream, stopping at `data: [DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if isinstance(event, dict):
            yield event


def api_base(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class ChatError(RuntimeError):
    pass


class ChatSession:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        import httpx

        key = args.api_key or os.environ.get(KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.base = api_base(args.url or default_url(os.environ))
        self.client = httpx.Client(
            base_url=self.base, headers=headers, timeout=httpx.Timeout(600, connect=10)
        )
        self.args = args
        self.out = out
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = (
            [{"role": "system", "content": self.args.system}] if self.args.system else []
        )

    def _error(self, response: Any) -> ChatError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        return ChatError(f"{response.status_code}: {message}")

    def pick_model(self) -> str:
        if self.args.model:
            return str(self.args.model)
        response = self.client.get("/models")
        if response.status_code != 200:
            raise self._error(response)
        names = [m["id"] for m in response.json().get("data", [])]
        if len(names) != 1:
            raise ChatError(f"pass --model; served: {', '.join(names) or 'nothing'}")
        return str(names[0])

    def ask(self, model: str, text: str) -> Answer:
        self.messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {
            "model": model,
            "messages": self.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.args.max_tokens,
        }
        if self.args.temperature is not None:
            body["temperature"] = self.args.temperature
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        tokens = 0
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._error(response)
                for event in sse_data(response.iter_lines()):
                    if "error" in event:
                        raise ChatError(str(event["error"].get("message", event["error"])))
                    usage = event.get("usage")
                    if usage:
                        tokens = int(usage.get("completion_tokens", tokens))
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if first is None:
                                first = time.perf_counter() - started
                            pieces.append(piece)
                            self.out.write(piece)
                            self.out.flush()
        except BaseException:
            self.messages.pop()
            raise
        text_out = "".join(pieces)
        self.messages.append({"role": "assistant", "content": text_out})
        return Answer(text_out, tokens or len(pieces), first, time.perf_counter() - started)


def describe_http_error(err: Exception, base: str) -> str:
    """A transport failure as a sentence that names the address tried."""
    import httpx

    reason = re.sub(r"^\[Errno -?\d+\] ", "", str(err)) or type(err).__name__
    if isinstance(err, httpx.ConnectError):
        return (
            f"cannot connect to {base} ({reason}); is `make run` or a gateway serving there? "
            "Pass --url, or set HOST and PORT as for `make run`."
        )
    if isinstance(err, httpx.TimeoutException):
        return f"{base} did not answer in time ({reason or 'timed out'})"
    return f"{base}: {reason}"


def run(args: argparse.Namespace) -> int:
    import httpx

    interactive = sys.stdin.isatty()
    session = ChatSession(args, sys.stdout)
    try:
        model = session.pick_model()
    except ChatError as err:
        print(f"modelplane chat: {session.base}: {err}", file=sys.stderr)
        return 1
    except httpx.HTTPError as err:
        print(f"modelplane chat: {describe_http_error(err, session.base)}", file=sys.stderr)
        return 1
    # Confirmations go where the statistics go: stderr, so a pipe's stdout holds answers only.
    notes = sys.stderr
    if interactive:
        print(f"Chatting with {model} at {session.base}; {COMMANDS}.")
    while True:
        if interactive:
            try:
                line = input("\nyou> ")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
        else:
            raw = sys.stdin.readline()
            if not raw:
                return 0
            line = raw.rstrip("\n")
        text = line.strip()
        if not text:
            continue
        command = chat_command(text)
        if command == "/exit":
            return 0
        if command == "/reset":
            session.reset()
            kept = " (the system prompt is kept)" if args.system else ""
            print(f"[conversation cleared{kept}]", file=notes, flush=True)
            continue
        if command == "/help":
            print(f"[{COMMANDS}]", file=notes, flush=True)
            continue
        if command is not None:
            print(f"[unknown command {command}; {COMMANDS}]", file=notes, flush=True)
            continue
        if interactive:
            print(f"{model}> ", end="", flush=True)
        try:
            answer = session.ask(model, text)
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            continue
        except ChatError as err:
            print(f"\nmodelplane chat: {err}", file=sys.stderr)
            if not interactive:
                return 1
            continue
        except httpx.HTTPError as err:
            print(f"\nmodelplane chat: {describe_http_error(err, session.base)}", file=sys.stderr)
            if not interactive:
                return 1
            continue
        print()
        print(answer.stats(), file=sys.stderr, flush=True)


def chat_command(text: str) -> str | None:
    """The command a line is (`/reset`, `/exit`, `/help`, or an unknown `/word`), else None.

    A line that starts with a slash but holds more than one word is a message."""
    if not text.startswith("/") or len(text.split()) != 1:
        return None
    return text.lower()
