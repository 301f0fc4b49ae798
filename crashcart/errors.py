"""The root exception and its shallow tree.

Every error a user can cause or meet is a :class:`CrashcartError` carrying
structured fields (file, field, value, remedy) and an exit status.  The CLI
maps them to exit codes in one place (:func:`crashcart.cli.main`); library
code raises, never prints and never exits.

Exit statuses (also documented in ``crashcart --help``):

====  =====================================================================
0     success
1     a check did not hold (expectations not met, action item open)
2     bad input: a file, field or value the user gave is wrong
3     environment: a required tool (QEMU, toolchain) is missing or failed
4     target or transport: the board, probe or port misbehaved
130   interrupted (Ctrl-C)
====  =====================================================================
"""

from __future__ import annotations

from pathlib import Path


class CrashcartError(Exception):
    """Root of all crashcart errors.

    :param message: what went wrong, in one sentence.
    :param path: the file involved, if any.
    :param field: the field inside that file (dotted path, ``memory[1].size``).
    :param value: the offending value.
    :param line: 1-based line number in ``path`` where the field sits.
    :param remedy: what the user can do next.
    """

    exit_status = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        field: str | None = None,
        value: object = None,
        line: int | None = None,
        remedy: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.value = value
        self.line = line
        self.remedy = remedy

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        text = where
        if self.field is not None:
            text += f"field '{self.field}': "
        text += self.message
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.remedy:
            text += f"\n  what to do: {self.remedy}"
        return text


class InputError(CrashcartError):
    """A file, field or value given by the user is invalid."""

    exit_status = 2


class EnvironmentProblem(CrashcartError):
    """A required external tool is missing or did not work."""

    exit_status = 3


class TargetError(CrashcartError):
    """The board, simulator, probe or port misbehaved."""

    exit_status = 4


class CheckFailed(CrashcartError):
    """A check ran and did not hold (e.g. replay expectations not met)."""

    exit_status = 1
