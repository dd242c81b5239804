"""Every training and grid command the README and docs/ show composes as written.

The override sets of ``lerac-train`` and ``lerac-grid <experiment>`` (also in the module
form ``python -m lerac.suite.train`` / ``.grid``) are taken from code blocks and inline
code, a sweep is cut to its first value, and the result is composed through Hydra and
resolved, so a renamed key or option, or a value Hydra's grammar refuses, fails here
instead of in a reader's terminal.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lerac.suite.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TRAIN = ("lerac-train", "python -m lerac.suite.train")
GRID = ("lerac-grid", "python -m lerac.suite.grid")
SHELL_OPERATORS = {";", "||", "&&", "|", "&", ">", "2>&1"}
GRID_FLAGS_WITH_VALUE = {"--block", "--gpu", "--out"}


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced code line and inline code span, with
    backslash continuations joined."""
    found, fenced, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.append((start, pending + line))
            pending = ""
        else:
            found.extend((number, span) for span in re.findall(r"`([^`]+)`", line))
    return found


def commands(page: Path) -> list[tuple[str, list[str]]]:
    """(where, overrides) of each command on ``page`` that can be composed."""
    out = []
    for number, code in code_lines(page.read_text()):
        for prefixes, experiment in ((TRAIN, False), (GRID, True)):
            for prefix in prefixes:
                at = code.find(prefix + " ")
                if at < 0 or "..." in code:
                    continue
                # The shell expands $HOME and the like before the command sees its words.
                words = shlex.split(os.path.expandvars(code[at + len(prefix) :]), comments=True)
                overrides = overrides_of(words, experiment)
                if overrides is not None:
                    out.append((f"{page.name}:{number}", overrides))
    return out


def overrides_of(words: list[str], experiment: bool) -> list[str] | None:
    """The overrides of a command's words (an experiment's name first for the grid);
    None for a placeholder (tableN, <experiment>, [--dry])."""
    overrides: list[str] = []
    words = list(words)
    while words and words[0] not in SHELL_OPERATORS:
        word = words.pop(0)
        if is_placeholder(word):
            return None
        if word in GRID_FLAGS_WITH_VALUE:
            words.pop(0)
        elif word.startswith("-"):
            continue
        elif "=" in word:
            overrides.append(word)
        elif experiment and not any(o.startswith("experiment=") for o in overrides):
            overrides.insert(0, f"experiment={word}")
    return overrides


def is_placeholder(word: str) -> bool:
    """[--dry], <experiment>, KIND, tableN: a word the reader fills in."""
    return word.startswith(("[", "<")) or word.isupper() or bool(re.search(r"[A-Z]$", word))


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            out.append(f"{key}={next(override.sweep_string_iterator())}")
        else:
            out.append(text)
    return out


CASES = [case for page in PAGES for case in commands(page)]


def test_the_docs_show_commands_of_every_kind():
    assert len(CASES) >= 40
    assert any(any(o.startswith("experiment=") for o in overrides) for _, overrides in CASES)


@pytest.mark.parametrize("where, overrides", CASES, ids=[where for where, _ in CASES])
def test_a_documented_command_composes(where, overrides):
    cfg = compose_config(first_of_each_sweep(overrides), hydra_config=True)
    run = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    OmegaConf.to_container(run, resolve=True)  # every interpolation resolves
