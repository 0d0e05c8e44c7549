"""The repository's Dockerfiles read as Docker reads them: stages, base images, RUN commands.

dockerfile-parse does the Dockerfile syntax (continuation lines, comments,
instruction words); this module groups its instructions by build stage and
splits RUN lines into the shell commands they chain, so tests can ask what a
stage installs with apt-get or pip.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockerfile_parse import DockerfileParser

# `image[:tag]@sha256:<64 hex digits>`, the form that fixes a base image's content.
DIGEST_PINNED: Final = re.compile(
    r"^(?P<image>[^@\s]+):(?P<tag>\w[\w.-]{0,127})@sha256:[0-9a-f]{64}$"
)
_SEPARATORS: Final = frozenset({"&&", "||", ";", "|", "&"})


@dataclass(frozen=True)
class Stage:
    """One `FROM ... [AS name]` and the instructions up to the next FROM."""

    name: str | None
    base: str
    instructions: tuple[tuple[str, str], ...]

    def values(self, instruction: str) -> list[str]:
        return [value for word, value in self.instructions if word == instruction]

    def commands(self) -> Iterator[list[str]]:
        """Each shell command of the stage's RUN lines, as argv words."""
        for run in self.values("RUN"):
            yield from split_commands(run)

    def apt_installed(self) -> list[str]:
        """Debian packages named in `apt-get install` commands, version pins removed."""
        found: list[str] = []
        for argv in self.commands():
            if argv[:1] == ["apt-get"] and "install" in argv:
                after = argv[argv.index("install") + 1 :]
                found += [word.split("=", 1)[0] for word in after if not word.startswith("-")]
        return found

    def pip(self, subcommand: str) -> list[list[str]]:
        """The arguments of every `pip <subcommand>`, run as pip, pip3 or `python -m pip`."""
        found: list[list[str]] = []
        for argv in self.commands():
            if argv[:1] in (["pip"], ["pip3"]):
                rest = argv[1:]
            elif argv[1:3] == ["-m", "pip"]:
                rest = argv[3:]
            else:
                continue
            if rest[:1] == [subcommand]:
                found.append(rest[1:])
        return found


def split_commands(script: str) -> list[list[str]]:
    """A RUN line's shell script as the simple commands it chains with && || ; |."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def stages(dockerfile: Path) -> list[Stage]:
    """The build stages of a Dockerfile in order (what comes before the first FROM is dropped)."""
    with dockerfile.open("rb") as handle:
        parsed = DockerfileParser(fileobj=handle, env_replace=False)
        structure = parsed.structure
    found: list[Stage] = []
    current: tuple[str | None, str, list[tuple[str, str]]] | None = None
    for item in structure:
        word, value = str(item["instruction"]).upper(), str(item["value"])
        if word == "FROM":
            if current is not None:
                found.append(Stage(current[0], current[1], tuple(current[2])))
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            current = (name, parts[0], [])
        elif word != "COMMENT" and current is not None:
            current[2].append((word, value))
    if current is not None:
        found.append(Stage(current[0], current[1], tuple(current[2])))
    return found


def stage(dockerfile: Path, name: str) -> Stage:
    (found,) = [each for each in stages(dockerfile) if each.name == name]
    return found


def option_values(args: list[str], *names: str) -> list[str]:
    """Values of an option given as `--name value` or `--name=value` among argv words."""
    values: list[str] = []
    for index, word in enumerate(args):
        for name in names:
            if word == name and index + 1 < len(args):
                values.append(args[index + 1])
            elif word.startswith(name + "="):
                values.append(word.split("=", 1)[1])
    return values
