"""Kubernetes label selectors as the API server reads `?labelSelector=`: parse and match.

The emulator (kube_emulator.py) filters lists and watches with these, so a
client that forgets its selector sees everything, as on a real cluster, and
one that sends a malformed selector gets the API server's 400. The grammar is
apimachinery's (`k8s.io/apimachinery/pkg/labels`): requirements joined by
commas, all of which must hold; each one is

    key                 the label exists
    !key                the label does not exist
    key=value key==value key!=value
    key in (v1,v2)      key notin (v1,v2)
    key>5 key<5         (integer comparisons; the label must exist)

`!=` and `notin` also match objects without the label, as in Kubernetes.
Keys and values are checked against Kubernetes' label syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
KEY: Final = re.compile(rf"({_DNS_SUBDOMAIN}/)?{_NAME}")
VALUE: Final = re.compile(rf"({_NAME})?")
_TOKENS: Final = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")

EXISTS: Final = "exists"
NOT_EXISTS: Final = "!"
IN: Final = "in"
NOT_IN: Final = "notin"
GREATER: Final = ">"
LESS: Final = "<"
_SINGLE: Final = {"=": IN, "==": IN, "!=": NOT_IN}


class SelectorError(ValueError):
    """A selector the API server would refuse (it answers 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == EXISTS:
            return present
        if self.operator == NOT_EXISTS:
            return not present
        if self.operator == NOT_IN:
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        if self.operator == IN:
            return labels[self.key] in self.values
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        (bound,) = (int(v) for v in self.values)
        return have > bound if self.operator == GREATER else have < bound


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)

    def keys(self) -> dict[str, Requirement]:
        return {r.key: r for r in self.requirements}


def _tokens(text: str) -> list[str]:
    found: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKENS.match(text, position)
        if match is None:  # only trailing whitespace is left
            break
        found.append(match.group(1))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of the selector")
        self.at += 1
        return token

    def error(self, why: str) -> SelectorError:
        return SelectorError(f"unable to parse requirement: {why} in {self.text!r}")

    def key(self) -> str:
        key = self.take()
        if not KEY.fullmatch(key) or len(key.rpartition("/")[0]) > 253:
            raise self.error(f"invalid label key {key!r}")
        return key

    def value(self) -> str:
        token = self.peek()
        if token in (None, ",", ")"):
            return ""  # `key=` selects the empty value
        value = self.take()
        if not VALUE.fullmatch(value):
            raise self.error(f"invalid label value {value!r}")
        return value

    def values(self) -> frozenset[str]:
        if self.take() != "(":
            raise self.error("expected '(' after in/notin")
        if self.peek() == ")":
            raise self.error("in and notin need at least one value")
        found = {self.value()}
        while (token := self.take()) == ",":
            found.add(self.value())
        if token != ")":
            raise self.error(f"expected ',' or ')', found {token!r}")
        return frozenset(found)

    def requirement(self) -> Requirement:
        if self.peek() == NOT_EXISTS:
            self.take()
            return Requirement(self.key(), NOT_EXISTS)
        key = self.key()
        token = self.peek()
        if token in (None, ","):
            return Requirement(key, EXISTS)
        self.take()
        if token in _SINGLE:
            return Requirement(key, _SINGLE[token], frozenset({self.value()}))
        if token in (IN, NOT_IN):
            return Requirement(key, token, self.values())
        if token in (GREATER, LESS):
            bound = self.take()
            if not re.fullmatch(r"-?[0-9]+", bound):
                raise self.error(f"{token} needs an integer, found {bound!r}")
            return Requirement(key, token, frozenset({bound}))
        raise self.error(f"unknown operator {token!r}")

    def selector(self) -> Selector:
        found: list[Requirement] = []
        if self.peek() is None:
            return Selector(())  # the empty selector selects everything
        while True:
            found.append(self.requirement())
            token = self.peek()
            if token is None:
                return Selector(tuple(found))
            if self.take() != ",":
                raise self.error(f"expected ',' before {token!r}")


def parse_selector(text: str) -> Selector:
    """The selector `text` means; SelectorError says why the API server would refuse it."""
    return _Parser(text).selector()
