"""Running the training entrypoint in-process and reading what a user sees of it."""

from __future__ import annotations

import logging
import sys

import pytest

from lerac.suite.train import main


def error_line(monkeypatch, capsys, argv: list[str], status: int = 2) -> str:
    """``lerac-train ARGV``'s one ``error:`` line, once it exited with ``status`` and
    printed no traceback. The log handlers Hydra installs (on this test's captured
    stderr) are taken down again, so later tests do not log into a closed stream."""
    monkeypatch.setattr(sys, "argv", ["lerac.suite.train", *argv])
    capsys.readouterr()  # what earlier steps printed is not this command's
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert exit_.value.code == status and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]
