"""Ready-to-paste examples printed when the server (or `make run`) is up.

Every command is printed as it must be typed: flush left (a heredoc's body
and its end marker must not be indented), with the interpreter and the
`modelplane` script of this installation, so it works from a second
terminal without activating anything. The examples ask for temperature 0:
a small model sampled at the usual temperature 1 rambles, and a first
answer should be the right one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

FIRST_QUESTION = "What is the capital of France?"


def shell_path(path: Path, cwd: Path | None = None) -> str:
    """`path` as the shortest thing to type from `cwd`: relative below it, else absolute."""
    here = (cwd or Path.cwd()).absolute()
    try:
        relative = path.absolute().relative_to(here)
    except ValueError:
        return str(path)
    return str(relative)


def python_command() -> str:
    """This interpreter when it has the `openai` package (it does in `make run`'s .venv)."""
    if importlib.util.find_spec("openai") is not None:
        return shell_path(Path(sys.executable))
    return "python3"  # the text printed beside it says to install openai


def modelplane_command() -> str:
    """This installation's `modelplane` script, so that it needs no activated virtualenv."""
    script = Path(sys.executable).parent / "modelplane"
    return shell_path(script) if script.exists() else "modelplane"


def curl_example(base_url: str, model: str, *, needs_key: bool) -> str:
    auth = ' -H "Authorization: Bearer $MODELPLANE_API_KEY"' if needs_key else ""
    question = [{"role": "user", "content": FIRST_QUESTION}]
    body = json.dumps({"model": model, "temperature": 0, "messages": question})
    return (
        f'curl -s {base_url}/chat/completions -H "Content-Type: application/json"{auth} \\\n'
        f"  -d '{body}'"
    )


def python_example(base_url: str, model: str, *, needs_key: bool, python: str) -> str:
    imports = "import os\n\n" if needs_key else ""
    api_key = 'os.environ["MODELPLANE_API_KEY"]' if needs_key else '"none"'
    return f"""{python} - <<'EOF'
{imports}from openai import OpenAI

client = OpenAI(base_url="{base_url}", api_key={api_key})
stream = client.chat.completions.create(
    model="{model}",
    temperature=0,
    stream=True,
    messages=[{{"role": "user", "content": "Write a haiku about Kubernetes."}}],
)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF"""


def usage_examples(base_url: str, model: str, *, needs_key: bool) -> str:
    python = python_command()
    client_note = "" if python != "python3" else " (needs the openai package: pip install openai)"
    key_note = (
        "\nThe API needs a key: export MODELPLANE_API_KEY=<one of its keys> first.\n"
        if needs_key
        else ""
    )
    return f"""
Ready: Modelplane is serving {model!r} at {base_url}
{key_note}
Ask it from a shell:

{curl_example(base_url, model, needs_key=needs_key)}

Or with the OpenAI Python client{client_note}:

{python_example(base_url, model, needs_key=needs_key, python=python)}
"""


def activate_hint() -> str | None:
    """How to put `modelplane` on PATH, when this installation is a virtualenv."""
    venv = os.environ.get("VIRTUAL_ENV")
    prefix = Path(sys.prefix)
    if venv or sys.prefix == sys.base_prefix:
        return None  # already active, or not a virtualenv
    return f"source {shell_path(prefix / 'bin' / 'activate')}"
