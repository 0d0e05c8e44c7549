"""The emulator's reading of `?labelSelector=` agrees with the Kubernetes API server's."""

from __future__ import annotations

import re

import pytest

from tests.support.label_selectors import SelectorError, parse_selector

LABELS = {"app": "web", "tier": "front", "replicas": "3", "example.com/owner": "team-a"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ("", True),
        ("app", True),
        ("!app", False),
        ("missing", False),
        ("!missing", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=db", True),  # != also selects objects without the label
        ("app in (db, web)", True),
        ("app in (db)", False),
        ("missing in (web)", False),
        ("app notin (web)", False),
        ("missing notin (web)", True),
        ("replicas>2", True),
        ("replicas<2", False),
        ("app>2", False),  # not a number: never greater
        ("app=web,tier=front", True),
        ("app=web, tier=back", False),
        ("  app = web ,example.com/owner=team-a ", True),
        ("missing=", False),  # the empty value needs the label, with an empty value
    ],
)
def test_selects_as_the_api_server_does(selector: str, selected: bool) -> None:
    assert parse_selector(selector).matches(LABELS) is selected


def test_empty_value_selects_the_empty_label() -> None:
    assert parse_selector("flag=").matches({"flag": ""})
    assert parse_selector("flag in (,on)").matches({"flag": ""})


def test_objects_without_labels() -> None:
    assert parse_selector("!app").matches(None)
    assert not parse_selector("app").matches(None)


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        ("app in (web", "unexpected end"),
        ("app in web", "expected '('"),
        ("app in ()", "at least one value"),
        ("app=web,", "unexpected end"),
        ("app web", "unknown operator"),
        ("app=web tier=front", "expected ','"),
        ("-app=web", "invalid label key"),
        ("app=we b", "expected ','"),
        ("app=" + "v" * 64, "invalid label value"),
        ("replicas>two", "needs an integer"),
        ("Example.com/app=web", "invalid label key"),
    ],
)
def test_refuses_what_the_api_server_refuses(selector: str, why: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(why)):
        parse_selector(selector)
