"""Running the training entrypoint in-process and reading what a user sees of it."""

from __future__ import annotations

import sys

import pytest

from lerac.suite.train import main


def error_line(monkeypatch, capsys, argv: list[str], status: int = 2) -> str:
    """``lerac-train ARGV``'s one ``error:`` line, once it exited with ``status`` and
    printed no traceback."""
    monkeypatch.setattr(sys, "argv", ["lerac.suite.train", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == status and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]
