"""The gateway's chat page in headless Chromium: which models it offers, and what it shows
while the gateway holds a message for a model that is not ready.

The gateway is the real `modelplane gateway` process with static discovery;
the replicas are small stand-ins that answer `/ready` as `modelplane serve`
does (503 while loading, then 200 listing the paths the model serves) and
stream a short answer: whether a replica is ready, and when it turns ready,
is what these tests decide, and a real server takes half a minute to load
(tests/integration/gateway/test_gateway_real_servers.py drives the page
against one). They run in threads of their own, since Selenium's calls block.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway.conftest import GatewayProcess

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium + chromium-driver: `make chromium`"
)

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


@dataclass
class Replica:
    """Answers as `modelplane serve` does for a chat or an embedding model."""

    endpoints: list[str]
    answer: str = "The capital of France is Paris."
    ready: threading.Event = field(default_factory=threading.Event)
    asked: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Replica:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if not replica.ready.is_set():
                    self._json(503, {"status": "loading", "detail": "loading model weights"})
                else:
                    self._json(200, {"status": "ready", "endpoints": replica.endpoints})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                replica.asked.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in replica.answer.split(" "):
                    chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def replicas() -> Iterator[dict[str, Replica]]:
    started = {
        "minilm": Replica([EMBEDDINGS]).start(),
        "smollm2": Replica([CHAT, "/v1/completions"]).start(),
        "late": Replica([CHAT, "/v1/completions"]).start(),
    }
    started["minilm"].ready.set()
    started["smollm2"].ready.set()
    yield started
    for replica in started.values():
        replica.stop()


def gateway_for(tmp: Path, models: dict[str, Replica]) -> GatewayProcess:
    config = tmp / "models.yaml"
    config.write_text(
        "models:\n"
        + "".join(f"  {name}:\n    upstreams: [{r.url}]\n" for name, r in models.items())
    )
    return GatewayProcess.with_args(
        tmp, "gateway", "--config", str(config), "--health-interval", "0.2",
        "--hold-timeout", "120",
    ).start()  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout_s: float = 60) -> Any:
    """Poll `condition`; an element the page replaced between two reads is read again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout_s, poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException,),
    ).until(condition)  # fmt: skip


def offered(driver: Any) -> list[tuple[str, str]]:
    """The picker's options as (label, value), read in one script: the page rebuilds the
    options when the model list changes, so reading them one by one can meet a removed one."""
    pairs = driver.execute_script(
        "return Array.from(document.getElementById('model').options)"
        ".map(o => [o.text.trim(), o.value]);"
    )
    return [(str(label), str(value)) for label, value in pairs]


def selected(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "model").get_attribute("value"))


def text_of(driver: Any, css: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):  # the page may replace the element between finding and reading it
        found = driver.find_elements(By.CSS_SELECTOR, css)
        try:
            return str(found[0].text) if found else ""
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being replaced while read")


def ask(driver: Any, question: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "prompt").send_keys(question)
    driver.find_element(By.ID, "send").click()


def test_the_picker_offers_only_chat_models_and_preselects_a_ready_one(
    replicas: dict[str, Replica], browser: Any, tmp_path: Path
) -> None:
    """An embedding model that sorts first is not offered (its first message would fail),
    a model not ready yet is offered as such, the ready chat model is chosen; the empty
    page says what to do, and loading it asks the gateway for nothing that is missing."""
    gateway = gateway_for(tmp_path, replicas)
    try:
        gateway.wait_synced()
        browser.get(gateway.url + "/")
        wait(browser, lambda d: offered(d) and "minilm" in text_of(d, "#hint"))
        assert offered(browser) == [("late (not ready)", "late"), ("smollm2", "smollm2")]
        assert selected(browser) == "smollm2"
        hint = text_of(browser, "#hint")
        assert "Ask smollm2 something below" in hint
        assert "Not listed: minilm (embeddings only" in hint
        ask(browser, "What is the capital of France?")
        wait(browser, lambda d: "tokens/s" in text_of(d, "#stats") and "streaming" not in
             text_of(d, "#stats"))  # fmt: skip
        answer = text_of(browser, ".message.assistant .content")
        assert answer.strip() == "The capital of France is Paris."
        assert text_of(browser, "#hint") == ""  # the conversation took its place
        assert [a["model"] for a in replicas["smollm2"].asked] == ["smollm2"]
        assert not replicas["minilm"].asked
        problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert problems == []  # no favicon.ico 404, no script error
    finally:
        gateway.stop()


def test_a_message_for_a_model_that_is_not_ready_says_model_loading_until_it_answers(
    replicas: dict[str, Replica], browser: Any, tmp_path: Path
) -> None:
    """The gateway holds the message (the model scales from zero, or its server is still
    loading); the page says so in the answer's place, then the answer replaces it."""
    late = replicas["late"]
    gateway = gateway_for(tmp_path, {"late": late, "minilm": replicas["minilm"]})
    try:
        gateway.wait_synced()
        browser.get(gateway.url + "/")
        wait(browser, lambda d: offered(d) == [("late (not ready)", "late")])
        assert "first answer waits until it has loaded" in text_of(browser, "#hint")
        ask(browser, "What is the capital of France?")
        loading = wait(browser, lambda d: text_of(d, ".message.assistant.loading .content"))
        assert loading == "model loading… the gateway holds this message until late is ready"
        wait(browser, lambda _: gateway.metric("modelplane_gateway_held_requests", model="late"))
        assert not late.asked
        late.ready.set()  # the replica has loaded
        wait(browser, lambda d: "streaming" not in text_of(d, "#stats") and "tokens/s" in
             text_of(d, "#stats"))  # fmt: skip
        assert text_of(browser, ".message.assistant .content").strip() == late.answer
        assert text_of(browser, ".message.assistant.loading .content") == ""
        assert gateway.metric("modelplane_gateway_hold_seconds_count", model="late") == 1
        wait(browser, lambda d: offered(d) == [("late", "late")])  # the picker caught up
    finally:
        gateway.stop()
