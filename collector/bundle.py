"""The evidence bundle: a directory of raw evidence with a manifest of hashes.

A bundle is written as data arrives and is valid at every instant:

* ``manifest.json`` is replaced atomically (write, fsync, rename) at each
  checkpoint: when a file is added or finished, every ``CHECKPOINT_S``
  seconds while a file grows, and when the capture ends.
* A growing file (the serial capture) is appended and flushed as bytes
  arrive; the manifest records the size and sha256 of its content at the
  last checkpoint.  If the process is killed, the bytes after the checkpoint
  are still on disk; ``verify`` checks the checkpointed prefix and reports
  the rest as kept but unverified, and ``seal`` (``crashcart bundle seal``)
  hashes them and marks the bundle partial with the reason.
* A capture that ends early (Ctrl-C, a pulled cable, a probe error) is
  finished with status ``partial`` and the reasons.

The format is documented in ``docs/bundle-format.md``; archives
(``.tar.gz``) are in :mod:`collector.archive`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from crashcart import __version__
from crashcart.errors import InputError

LOG = logging.getLogger(__name__)

FORMAT = "crashcart-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKPOINT_S = 0.5
STATUSES = ("capturing", "complete", "partial")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def check_relpath(name: str) -> PurePosixPath:
    """A bundle-relative path: no absolute paths, no ``..``, no empty parts."""
    p = PurePosixPath(name)
    if (
        not name
        or p.is_absolute()
        or any(part in ("..", "", ".") for part in name.split("/"))
        or "\\" in name
        or "\0" in name
    ):
        raise InputError("unsafe path in bundle", value=name,
                         remedy="bundle paths are relative, with no '..' parts")
    return p


class GrowingFile:
    """A bundle file written as data arrives (append, flush, hash as we go)."""

    def __init__(self, bundle: BundleWriter, name: str, handle: IO[bytes]) -> None:
        self.bundle = bundle
        self.name = name
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._handle.write(data)
        self._handle.flush()
        self._hash.update(data)
        self.size += len(data)
        self.bundle._maybe_checkpoint()

    def fsync(self) -> None:
        os.fsync(self._handle.fileno())

    def digest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self.bundle._file_finished(self)


@dataclass
class BundleWriter:
    """Writes one bundle directory.  Use as a context manager.

    On a normal exit the bundle is finished ``complete`` unless a source
    reported a problem; on an exception (including KeyboardInterrupt) it is
    finished ``partial`` with the exception as the reason, and the exception
    propagates.
    """

    path: Path
    target: str | None = None
    command: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(init=False)
    _growing: dict[str, GrowingFile] = field(init=False, default_factory=dict)
    _lock: threading.RLock = field(init=False, default_factory=threading.RLock)
    _last_checkpoint: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.path.exists() and any(self.path.iterdir()):
            raise InputError("output directory exists and is not empty", path=self.path,
                             remedy="choose a new --out directory; evidence is never overwritten")
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": {"name": "crashcart", "version": __version__},
            "target": self.target,
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "command": self.command,
            "capture": {
                "started": utc_now(),
                "ended": None,
                "status": "capturing",
                "partial_reasons": [],
                "last_checkpoint": None,
            },
            "sources": [],
            "files": {},
        }
        self.checkpoint()

    # -- context manager ----------------------------------------------------

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc is not None:
            if isinstance(exc, KeyboardInterrupt):
                reason = f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})"
            else:
                reason = f"capture failed: {exc}"
            self.mark_partial(reason)
        self.finish()

    # -- sources and files ---------------------------------------------------

    def add_source(self, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Record a capture source; returns its manifest entry to update."""
        entry = {"kind": kind, "settings": settings, "status": "capturing", "error": None,
                 "started": utc_now(), "ended": None, "events": []}
        with self._lock:
            self.manifest["sources"].append(entry)
            self.checkpoint()
        return entry

    def end_source(self, entry: dict[str, Any], *, error: str | None = None) -> None:
        with self._lock:
            entry["ended"] = utc_now()
            entry["status"] = "partial" if error else "complete"
            entry["error"] = error
            if error:
                self.mark_partial(f"{entry['kind']}: {error}", checkpoint=False)
            self.checkpoint()

    def source_event(self, entry: dict[str, Any], what: str, **details: Any) -> None:
        """Record something that happened to a source (a halt, a gap, a reconnect)."""
        with self._lock:
            entry["events"].append({"time": utc_now(), "monotonic": time.monotonic(),
                                    "what": what, **details})
            self.checkpoint()

    def write_file(self, name: str, data: bytes, *, kind: str, source: str | None = None,
                   meta: dict[str, Any] | None = None) -> None:
        """Write a whole file at once (registers, a memory region)."""
        rel = check_relpath(name)
        dest = self.path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
        with self._lock:
            self.manifest["files"][str(rel)] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "kind": kind,
                "source": source,
                "complete": True,
                **({"meta": meta} if meta else {}),
            }
            self.checkpoint()

    def write_json(self, name: str, value: Any, *, kind: str, source: str | None = None) -> None:
        self.write_file(name, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(),
                        kind=kind, source=source)

    def open_growing(self, name: str, *, kind: str, source: str | None = None) -> GrowingFile:
        """A file that grows as data arrives (serial capture, chunk index)."""
        rel = check_relpath(name)
        dest = self.path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle = open(dest, "xb")  # noqa: SIM115 - closed by GrowingFile.close
        grow = GrowingFile(self, str(rel), handle)
        with self._lock:
            self._growing[str(rel)] = grow
            self.manifest["files"][str(rel)] = {
                "size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "kind": kind,
                "source": source, "complete": False,
            }
            self.checkpoint()
        return grow

    def mark_partial(self, reason: str, *, checkpoint: bool = True) -> None:
        with self._lock:
            reasons = self.manifest["capture"]["partial_reasons"]
            if reason not in reasons:
                reasons.append(reason)
            if checkpoint:
                self.checkpoint()

    def set_summary(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self.manifest["summary"] = summary
            self.checkpoint()

    def finish(self) -> None:
        """Close growing files and write the final manifest."""
        with self._lock:
            for grow in list(self._growing.values()):
                grow.close()
            cap = self.manifest["capture"]
            if cap["status"] == "capturing":
                cap["ended"] = utc_now()
                cap["status"] = "partial" if cap["partial_reasons"] else "complete"
            self.checkpoint(force=True)

    # -- manifest -------------------------------------------------------------

    def checkpoint(self, *, force: bool = True) -> None:
        """Write the manifest atomically, with growing files' current hashes."""
        with self._lock:
            for name, grow in self._growing.items():
                entry = self.manifest["files"][name]
                entry["size"] = grow.size
                entry["sha256"] = grow.digest()
                entry["complete"] = grow.closed
                if not grow.closed:
                    grow._handle.flush()
            self.manifest["capture"]["last_checkpoint"] = utc_now()
            data = (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode()
            tmp = self.path / (MANIFEST + ".tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path / MANIFEST)
            self._last_checkpoint = time.monotonic()

    def _maybe_checkpoint(self) -> None:
        if time.monotonic() - self._last_checkpoint >= CHECKPOINT_S:
            self.checkpoint()

    def _file_finished(self, grow: GrowingFile) -> None:
        with self._lock:
            self._growing.pop(grow.name, None)
            entry = self.manifest["files"][grow.name]
            entry.update(size=grow.size, sha256=grow.digest(), complete=True)
            self.checkpoint()


# -- reading and verifying ----------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One result of verifying a bundle."""

    level: str  # "error" (tampered or missing), "warning" (partial, unverified bytes), "info"
    file: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{self.level}: {where}{self.message}"


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    status: str  # complete | partial | capturing (never finished)
    findings: tuple[Finding, ...]
    files_checked: int

    @property
    def ok(self) -> bool:
        """No file is changed, missing or extra (a partial bundle can be ok)."""
        return not any(f.level == "error" for f in self.findings)


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and structurally check a bundle's manifest."""
    mpath = path / MANIFEST
    if not path.is_dir():
        raise InputError("not a bundle directory", path=path,
                         remedy="pass the directory `crashcart collect --out` wrote, or an archive")
    try:
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise InputError(f"manifest is {size} bytes, over the limit", path=mpath)
        manifest = json.loads(mpath.read_bytes())
    except FileNotFoundError:
        raise InputError("bundle has no manifest.json", path=path,
                         remedy="this is not a crashcart bundle, or its manifest was deleted") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest is not valid JSON: {exc}", path=mpath) from None
    except OSError as exc:
        raise InputError(f"cannot read manifest: {exc.strerror}", path=mpath) from None
    _check_manifest(manifest, mpath)
    return manifest


def _check_manifest(m: Any, mpath: Path) -> None:
    def bad(field_name: str, message: str, value: Any = None) -> InputError:
        return InputError(message, path=mpath, field=field_name, value=value)

    if not isinstance(m, dict):
        raise bad("(top level)", "manifest must be a JSON object")
    if m.get("format") != FORMAT:
        raise bad("format", f"not a crashcart bundle manifest (expected '{FORMAT}')", m.get("format"))
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("format_version", "must be a positive integer", version)
    if version > FORMAT_VERSION:
        raise bad("format_version", f"bundle is format {version}; this crashcart reads up to "
                  f"{FORMAT_VERSION}", version)
    cap = m.get("capture")
    if not isinstance(cap, dict) or cap.get("status") not in STATUSES:
        raise bad("capture.status", "must be one of " + ", ".join(STATUSES),
                  cap.get("status") if isinstance(cap, dict) else cap)
    if not isinstance(cap.get("partial_reasons", []), list):
        raise bad("capture.partial_reasons", "must be a list")
    files = m.get("files")
    if not isinstance(files, dict):
        raise bad("files", "must be an object mapping paths to entries")
    for name, entry in files.items():
        try:
            check_relpath(name)
        except InputError:
            raise bad(f"files.{name}", "unsafe path (absolute or with '..')", name) from None
        if not isinstance(entry, dict):
            raise bad(f"files.{name}", "must be an object")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"files.{name}.size", "must be a non-negative integer", size)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or not all(
                c in "0123456789abcdef" for c in digest):
            raise bad(f"files.{name}.sha256", "must be 64 lowercase hex digits", digest)
    if not isinstance(m.get("sources", []), list):
        raise bad("sources", "must be a list")


def _iter_files(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                dirnames.remove(d)
                yield str((base / d).relative_to(root).as_posix())
        for f in filenames:
            yield str((base / f).relative_to(root).as_posix())


def _hash_prefix(path: Path, size: int) -> tuple[str, int]:
    h = hashlib.sha256()
    remaining = size
    with open(path, "rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
    return h.hexdigest(), size - remaining


def verify_bundle(path: str | Path) -> VerifyReport:
    """Check every file against the manifest: changed, missing, extra, partial."""
    root = Path(path)
    manifest = read_manifest(root)
    findings: list[Finding] = []
    cap = manifest["capture"]
    status = cap["status"]
    if status == "capturing":
        findings.append(Finding(
            "warning", None,
            "capture never finished (process killed?); last checkpoint "
            f"{cap.get('last_checkpoint')}; run `crashcart bundle seal` to record what is there"))
    elif status == "partial":
        for reason in cap.get("partial_reasons", []) or ["no reason recorded"]:
            findings.append(Finding("warning", None, f"partial capture: {reason}"))
    files = manifest["files"]
    for name, entry in sorted(files.items()):
        fpath = root / name
        if fpath.is_symlink():
            findings.append(Finding("error", name, "is a symbolic link (not allowed in a bundle)"))
            continue
        if not fpath.is_file():
            findings.append(Finding("error", name, "missing"))
            continue
        actual_size = fpath.stat().st_size
        want = entry["size"]
        if actual_size < want:
            findings.append(Finding("error", name,
                                    f"truncated: {actual_size} bytes, manifest says {want}"))
            continue
        digest, _ = _hash_prefix(fpath, want)
        if digest != entry["sha256"]:
            findings.append(Finding("error", name,
                                    f"changed: sha256 {digest[:16]}..., manifest says "
                                    f"{entry['sha256'][:16]}..."))
            continue
        if actual_size > want:
            if entry.get("complete", True):
                findings.append(Finding("error", name,
                                        f"{actual_size - want} bytes appended after the capture "
                                        "finished"))
            else:
                findings.append(Finding(
                    "warning", name,
                    f"{actual_size - want} bytes after the last checkpoint are kept but "
                    "unverified (capture was interrupted)"))
        elif not entry.get("complete", True):
            findings.append(Finding("warning", name, "still marked as being written"))
    listed = set(files) | {MANIFEST}
    for name in sorted(_iter_files(root)):
        if name in listed:
            continue
        if status == "capturing" and name.endswith(".tmp"):
            # The process died inside an atomic write (write .tmp, then rename).
            findings.append(Finding("warning", name, "left by a write the interruption cut short"))
        else:
            findings.append(Finding("error", name, "extra file not in the manifest"))
    return VerifyReport(root, status, tuple(findings), len(files))


def seal_bundle(path: str | Path) -> VerifyReport:
    """Finish a bundle whose capture was killed: hash what is on disk, mark partial.

    Only growing files (``complete: false``) may have grown; their checkpointed
    prefix must still match, so sealing never launders a tampered file.
    """
    root = Path(path)
    report = verify_bundle(root)
    if not report.ok:
        raise InputError("bundle fails verification; refusing to seal it", path=root,
                         remedy="run `crashcart bundle verify` and keep the bundle as evidence")
    manifest = read_manifest(root)
    cap = manifest["capture"]
    if cap["status"] != "capturing" and all(e.get("complete", True)
                                            for e in manifest["files"].values()):
        return report
    for name, entry in manifest["files"].items():
        if entry.get("complete", True):
            continue
        fpath = root / name
        size = fpath.stat().st_size
        digest, _ = _hash_prefix(fpath, size)
        entry.update(size=size, sha256=digest, complete=True, sealed_after_interruption=True)
    leftover = root / (MANIFEST + ".tmp")
    if leftover.exists():
        leftover.unlink()  # a stale copy of the manifest from a cut-short checkpoint
    if cap["status"] == "capturing":
        listed = set(manifest["files"]) | {MANIFEST}
        for name in sorted(_iter_files(root)):
            if name in listed or not name.endswith(".tmp") or (root / name).is_symlink():
                continue
            data = (root / name).read_bytes()
            manifest["files"][name] = {
                "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "kind": "interrupted-write", "source": None, "complete": True,
                "sealed_after_interruption": True,
            }
    for source in manifest.get("sources", []):
        if isinstance(source, dict) and source.get("status") == "capturing":
            source["status"] = "partial"
            source["error"] = source.get("error") or "capture interrupted"
    reason = "capture interrupted before it finished (sealed afterwards by `crashcart bundle seal`)"
    if cap["status"] == "capturing":
        cap["status"] = "partial"
        cap.setdefault("partial_reasons", []).append(reason)
    cap["sealed"] = utc_now()
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, root / MANIFEST)
    return verify_bundle(root)
