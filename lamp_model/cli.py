"""Command-line conventions shared by every ``python -m lamp_model <command>``.

A user error (bad flag, missing file, unreadable or unwritable path, refused setting, full disk) is printed
as ONE line ``error: …`` on stderr with exit code 2, never as a traceback; programming errors still raise.
"""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, NoReturn

#: Exit code of every user error (argparse's own convention).
USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error:`` line (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def describe(err: BaseException) -> str:
    """The one-line text of a user error."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return f"no space left on the device{where}; free some space and run again"
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError):
        return f"{err.filename or ''}: {err.strerror}".lstrip(": ")
    return " ".join(str(err).split()) or type(err).__name__


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; returns :data:`USAGE_ERROR`."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return USAGE_ERROR


def run_command(body: Callable[[], int | None], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command body; ``ValueError``, ``OSError``, ``FloatingPointError`` and ``user_errors`` become one
    ``error:`` line and exit code 2."""
    try:
        return int(body() or 0)
    except (ValueError, OSError, FloatingPointError, *user_errors) as err:
        return fail(describe(err))
