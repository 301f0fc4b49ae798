"""Third-party crash evidence in, :class:`~collector.evidence.CrashEvidence` out.

One adapter per format (reference: docs/input-formats.md):

==========================  ============================================================
``zephyr-log``              Zephyr fatal-error prints (:mod:`.zephyr_log`); ``#CD:``
                            coredumps that follow a crash are merged into it
``zephyr-coredump``         Zephyr coredump log lines ``#CD:...`` (:mod:`.zephyr_coredump`)
``zephyr-coredump-bin``     the binary Zephyr coredump (``ZE`` header)
``cmbacktrace``             CmBacktrace fault and assert prints (:mod:`.cmbacktrace`)
==========================  ============================================================

:func:`sniff` names the format of a text or bytes, :func:`parse` returns every
crash in it.  The fixture firmware's own crash log and crashcart bundles are
read by :mod:`collector.sources`, which calls :func:`parse` for these formats.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from collector.evidence import CrashEvidence
from collector.formats import cmbacktrace, zephyr_coredump, zephyr_log
from collector.formats._common import decode_text, read_source
from crashcart.errors import InputError

FORMATS = (zephyr_log.FORMAT, zephyr_coredump.FORMAT, zephyr_coredump.FORMAT_BINARY,
           cmbacktrace.FORMAT)

_TEXT_PARSERS: dict[str, Callable[..., list[CrashEvidence]]] = {
    zephyr_log.FORMAT: zephyr_log.parse_zephyr_log,
    zephyr_coredump.FORMAT: zephyr_coredump.parse_cd_log,
    cmbacktrace.FORMAT: cmbacktrace.parse_cmbacktrace,
}

__all__ = ["FORMATS", "parse", "sniff", "to_cd_log", "write_zephyr_coredump"]

write_zephyr_coredump = zephyr_coredump.write_zephyr_coredump
to_cd_log = zephyr_coredump.to_cd_log


def sniff(text_or_bytes: str | bytes | bytearray) -> str | None:
    """The format of ``text_or_bytes`` (one of :data:`FORMATS`), or None.

    A Zephyr log that carries both a fatal-error print and ``#CD:`` lines is
    ``zephyr-log`` (its parser merges the coredump into the crash).
    """
    if isinstance(text_or_bytes, (bytes, bytearray)):
        data = bytes(text_or_bytes)
        if zephyr_coredump.looks_like_binary(data):
            return zephyr_coredump.FORMAT_BINARY
        text = decode_text(data)
    else:
        text = text_or_bytes
    if zephyr_log.looks_like(text):
        return zephyr_log.FORMAT
    if zephyr_coredump.looks_like_log(text):
        return zephyr_coredump.FORMAT
    if cmbacktrace.looks_like(text):
        return cmbacktrace.FORMAT
    return None


def parse(path_or_text: str | Path | bytes | bytearray, fmt: str | None = None, *,
          partial_ok: bool = False) -> list[CrashEvidence]:
    """Every crash in a file, text or bytes, oldest first.

    ``path_or_text``: a :class:`~pathlib.Path`, a one-line string naming an
    existing file, any other string (the text itself), or bytes.  ``fmt``:
    one of :data:`FORMATS`; None sniffs.  A cut-off or damaged crash raises
    :class:`~crashcart.errors.InputError` naming the file, line (or byte
    offset) and value; ``partial_ok`` keeps what was decoded and says in
    ``notes`` what is missing.
    """
    source = read_source(path_or_text)
    name = source.name
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown input format '{fmt}'", path=name, field="format", value=fmt,
                         remedy=f"use one of: {', '.join(FORMATS)}, or leave it out to detect it")
    if source.data is not None and (fmt == zephyr_coredump.FORMAT_BINARY or (
            fmt is None and zephyr_coredump.looks_like_binary(source.data))):
        return zephyr_coredump.parse_coredump_bin(source.data, name, partial_ok=partial_ok)
    text = source.text if source.text is not None else decode_text(source.data or b"")
    if fmt == zephyr_coredump.FORMAT_BINARY:
        raise InputError("not a binary Zephyr coredump (no 'ZE' header)", path=name,
                         field="format", value=fmt,
                         remedy="pass the #CD: log as format 'zephyr-coredump'")
    found = fmt or sniff(text)
    if found is None:
        raise InputError(
            "no crash in a format crashcart reads (Zephyr fatal error, Zephyr coredump, "
            "CmBacktrace) was found",
            path=name, field="format",
            remedy="check that this is the console output of the crash; the fixture "
                   "firmware's own crash log and crashcart bundles are read by "
                   "collector.sources, not by collector.formats")
    evidence = _TEXT_PARSERS[found](text, name, partial_ok=partial_ok)
    if not evidence:
        raise InputError(f"no {found} crash was found", path=name, field="format", value=found,
                         remedy="check the format, or leave it out to detect it")
    return evidence
