"""Durations with explicit units, as users type them: ``2s``, ``250ms``."""

from __future__ import annotations

import re

from crashcart.errors import InputError

_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000,
             "h": 3_600_000_000_000}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|min|h)\s*")


def parse_duration_ns(text: str, *, what: str = "duration") -> int:
    """``"1.5s"`` -> 1_500_000_000.  A unit is required."""
    match = _PATTERN.fullmatch(str(text))
    if match is None:
        raise InputError(
            f"{what} must be a number with a unit (ns, us, ms, s, min, h)",
            value=text,
            remedy="for example 500ms or 2s",
        )
    value = float(match.group(1)) * _UNITS_NS[match.group(2)]
    if value <= 0:
        raise InputError(f"{what} must be greater than zero", value=text)
    return int(round(value))


def format_ns(ns: int) -> str:
    """A short human form: ``1.250 s``, ``12.345 ms``."""
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3f} s"
    return f"{ns / 1e6:.3f} ms"
