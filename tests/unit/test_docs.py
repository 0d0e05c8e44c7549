"""The README and docs/ name only what exists: files, links, make targets, commands, samples.

A page that names a file that moved, a `make` target that was renamed or a
`modelplane` subcommand that does not exist sends a newcomer nowhere; each
check here reads the pages as a reader would follow them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from modelplane.api import contract
from modelplane.cli import build_parser
from tests.chart.validate import validate_custom_resource

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
IDS = [str(p.relative_to(REPO)) for p in PAGES]
# Top-level folders whose paths a page may name (as `path` or a link).
TOP = ("bench", "charts", "crds", "docs", "e2e", "manifests", "operator", "server", "tests")
# Outputs a command writes (ignored by git), not files a checkout has.
GENERATED = {"bench/results/"}


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page (headings inside code blocks are not headings)."""
    found, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"^#{1,6} (.*)", line)):
            title = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            found.add(title.replace(" ", "-"))
    return found


def prose(page: Path) -> str:
    return page.read_text()


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)


def test_the_pages_exist_and_the_readme_stays_a_first_hour_read() -> None:
    assert (REPO / "docs").is_dir() and len(PAGES) > 5
    assert len((REPO / "README.md").read_text().splitlines()) < 520


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, fragment = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif fragment and where.suffix == ".md" and fragment not in anchors(where):
            broken.append(f"{target}: no heading #{fragment}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_repository_path_named_exists(page: Path) -> None:
    named = set(re.findall(rf"`((?:{'|'.join(TOP)})/[^`\s]*)`", prose(page)))
    missing = sorted(
        p
        for p in named - GENERATED
        if not any(ch in p for ch in "<>*{$") and not (REPO / p).exists()
    )
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_make_target_named_exists(page: Path) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", prose(page)))
    assert named <= targets, sorted(named - targets)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_modelplane_command_named_exists(page: Path) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(sub.choices)
    named = set(re.findall(r"`modelplane ([a-z][\w-]*)", prose(page)))
    named |= {
        m
        for block in code_blocks(page, "sh")
        for m in re.findall(r"^modelplane ([a-z-]+)", block, re.M)
    }
    assert named <= commands, sorted(named - commands)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_llmdeployment_example_is_valid(page: Path) -> None:
    """YAML examples of the resource validate against the CRD the chart installs."""
    problems = {}
    for block in code_blocks(page, "yaml"):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == contract.KIND:
                errors = validate_custom_resource(doc)
                if errors:
                    problems[doc["metadata"]["name"]] = errors
    assert not problems, problems


@pytest.mark.parametrize(
    "sample", sorted((REPO / "manifests" / "samples").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_sample_is_documented(sample: Path) -> None:
    assert f"`{sample.name}`" in (REPO / "README.md").read_text()


README = REPO / "README.md"
QUICK_START_URL = "http://127.0.0.1:8000/v1"


def test_the_quick_start_examples_are_the_ones_make_run_prints() -> None:
    """The README's curl and Python examples are the banner's, which the quick-start test
    runs against the real local model (tests/integration/test_quick_start.py)."""
    from modelplane.server.examples import curl_example, python_example

    blocks = code_blocks(README, "sh")
    assert curl_example(QUICK_START_URL, "smollm2", needs_key=False) + "\n" in blocks
    python = python_example(QUICK_START_URL, "smollm2", needs_key=False, python=".venv/bin/python")
    assert python + "\n" in blocks


def test_the_readme_puts_modelplane_on_path_before_its_first_modelplane_command() -> None:
    """`make run` installs the command in .venv/bin, which is not on PATH until activated."""
    lines = [line for block in code_blocks(README, "sh") for line in block.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("modelplane "))
    assert "source .venv/bin/activate" in lines[:first]
