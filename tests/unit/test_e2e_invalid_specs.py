"""The e2e invalid-spec cases (e2e/test_invalid_specs.py) hold offline, before a cluster sees them.

Each case must break exactly one CEL rule of the CRD, the one whose message
the e2e test expects the API server to answer with: evaluated here with the
CEL evaluator and structural defaulting of tests/unit/test_crd.py. The
unchanged sample breaks none. So a failure on a cluster means the API server
disagrees, not that the case was wrong.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.test_invalid_specs import CASES, CRD, NAME, cel_message, cel_messages, manifest
from tests.unit.test_crd import cel_failures


def test_the_messages_are_the_crd_s() -> None:
    messages = cel_messages()
    assert len(messages) >= len(CASES)
    assert CRD.is_file()
    with pytest.raises(LookupError, match="2 CEL messages"):
        cel_message("rollout.canary.steps must")


def test_the_sample_unchanged_breaks_no_rule() -> None:
    assert cel_failures(manifest(NAME, {})) == []


@pytest.mark.parametrize(
    ("name", "changes", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_case_breaks_exactly_the_rule_it_names(
    name: str, changes: dict[str, Any], fragment: str
) -> None:
    assert cel_failures(manifest(name, changes)) == [cel_message(fragment)]
