"""A small reader for deploy/Dockerfile: its stages and what each runs (no Docker needed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).parents[2] / "deploy" / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    @property
    def healthcheck(self) -> str | None:
        checks = self.all("HEALTHCHECK")
        return checks[-1] if checks and checks[-1] != "NONE" else None


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


def build_args(text: str) -> dict[str, str]:
    return dict(
        args.split("=", 1) for kw, args in instructions(text) if kw == "ARG" and "=" in args
    )


def stages(text: str | None = None) -> dict[str, Stage]:
    text = DOCKERFILE.read_text() if text is None else text
    defaults = build_args(text)
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(found))
            current = found[name] = Stage(name, base)
        elif current is not None:
            current.instructions.append((keyword, args))
    return found


def lineage(name: str, found: dict[str, Stage]) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [found[name]]
    while chain[-1].base in found:
        chain.append(found[chain[-1].base])
    return chain


def effective_user(name: str, found: dict[str, Stage]) -> str:
    for stage in lineage(name, found):
        users = stage.all("USER")
        if users:
            return users[-1]
    return "root"
