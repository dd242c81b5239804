"""Errors the suite reports as one clear line instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LeRaCError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


class ConfigError(LeRaCError, ValueError):
    """A configuration value that cannot work."""


class DataNotFoundError(LeRaCError, FileNotFoundError):
    """A data set is missing from disk."""


class CorruptDataError(LeRaCError):
    """A file inside a data set cannot be read (damaged, partial, wrong format)."""


class RunLocked(LeRaCError):
    """Another live process is training in the same run directory."""


class RunInterrupted(Exception):  # noqa: N818 - a state, not a fault: not a LeRaCError
    """SIGTERM / SIGUSR1 / SIGUSR2 stopped the run; its last checkpoint stands and the same
    command resumes it. Not a LeRaCError: a sweep must stop here, not go on."""


MAX_LINE = 1000  # characters of an `error:` line; the rest of a longer text is cut


def first_line(err: BaseException | str) -> str:
    """The first non-empty line of an error's text (a library's long message, quoted in ours)."""
    for line in str(err).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(err).__name__ if isinstance(err, BaseException) else ""


def one_line(err: BaseException | str) -> str:
    """An error's whole text on one line (its lines joined with '; '), at most ``MAX_LINE``
    characters: what follows ``error:`` on the console."""
    lines = [" ".join(line.split()) for line in str(err).splitlines()]
    text = "; ".join(line for line in lines if line)
    if not text and isinstance(err, BaseException):
        text = type(err).__name__
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Name ``path`` when reading it fails: ``with reading(file): batch = read_batch(file)``."""
    try:
        yield
    except LeRaCError:
        raise
    except Exception as err:
        raise CorruptDataError(
            f"{path} cannot be read ({type(err).__name__}: {first_line(err)}); the file is "
            "damaged, partial or not in the expected format: fetch the data set again"
        ) from err
