"""A short fuzzing campaign in CI: the real CPU engine behind a server and a gateway.

The same campaign as `make fuzz` (tests/fuzz/campaign.py: schemathesis cases
from vLLM's own request models, positive and negative, half to the server and
half to the gateway), with a fixed seed and a small budget. What a client
must never see: a 5xx other than 503, an error outside the OpenAI envelope, a
stream without its `[DONE]` (a Responses stream without its last event), or no
answer at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.campaign import campaign, report

pytestmark = pytest.mark.engine

CASES = 64  # a batch of 8 per route and mode: chat, completions, responses, embeddings
SEED = 20261206


def test_fuzzed_requests_get_answers_a_client_can_handle(smollm2_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    tally = campaign(
        smollm2_dir, tmp_path, cases=CASES, seconds=240, random_seed=SEED, log=lines.append
    )
    report(tally, lines.append)
    summary = "\n".join(lines)
    assert tally.cases == CASES, summary  # the budget was spent on cases, not cut short
    assert not tally.findings, summary
    assert tally.summary() == f"cases={CASES} server_5xx=0 gateway_5xx=0 crashes=0"
    # Both front doors answered, and some requests reached the engine and were served.
    targets = {target for target, _, _ in tally.statuses}
    assert targets == {"server", "gateway"}, summary
    assert any(status == 200 for _, label, status in tally.statuses if "/v1/" in label), summary
