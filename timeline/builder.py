"""The timeline: every event from bundles and event files, in time order.

:func:`build_timeline` takes bundles and event files explicitly;
:func:`incident_timeline` takes them from an incident directory;
:func:`timeline_from_paths` is what ``crashcart timeline`` uses, and accepts
any mix of incident directories, bundle directories and event files.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from crashcart.errors import InputError
from targets import load_target
from timeline.bundle_events import BundleCapture, CrashDecoder, read_bundle
from timeline.clock import ClockFit
from timeline.events_file import SUFFIXES as EVENT_SUFFIXES
from timeline.events_file import EventFile, load_event_file
from timeline.incident import INCIDENT_FILE, EvidenceEntry, Incident, load_incident
from timeline.model import DEVICE_KINDS, Event


@dataclass(frozen=True)
class BundleSource:
    """A bundle to read, and how to name and correct it."""

    path: Path
    device: str | None = None
    evidence_name: str | None = None
    target: str | None = None
    host_clock_offset_us: int = 0


@dataclass(frozen=True)
class Timeline:
    events: tuple[Event, ...]            # sorted by wall time; ties keep stream order
    captures: tuple[BundleCapture, ...]
    event_files: tuple[EventFile, ...]
    warnings: tuple[str, ...]

    @property
    def fits(self) -> tuple[ClockFit, ...]:
        return tuple(fit for capture in self.captures for fit in capture.fits)

    def lanes(self) -> list[str]:
        """Swimlanes: devices first (in capture order), then external sources."""
        devices: dict[str, None] = {c.device: None for c in self.captures}
        sources: dict[str, None] = {}
        for event in self.events:
            if event.kind in DEVICE_KINDS:
                devices.setdefault(event.lane, None)
            else:
                sources.setdefault(event.lane, None)
        return list(devices) + [s for s in sources if s not in devices]


def build_timeline(
    bundles: Iterable[BundleSource] = (),
    event_files: Iterable[tuple[Path, str | None]] = (),
    *,
    decoder: CrashDecoder | None = None,
) -> Timeline:
    """Read every bundle and event file and sort their events onto one clock.

    ``event_files`` holds ``(path, display name)`` pairs; the display name is
    how evidence links name the file (default: the path).
    """
    with _cyclic_gc_paused():
        captures = tuple(
            read_bundle(b.path, device=b.device, evidence_name=b.evidence_name,
                        target=load_target(b.target) if b.target else None,
                        host_clock_offset_us=b.host_clock_offset_us, decoder=decoder)
            for b in bundles)
        files = tuple(load_event_file(path, display_name=name) for path, name in event_files)
    events: list[Event] = []
    for capture in captures:
        events.extend(capture.events)
    for file in files:
        events.extend(file.events)
    events.sort(key=attrgetter("wall_us"))
    warnings = tuple(w for c in captures for w in c.warnings)
    return Timeline(tuple(events), captures, files, warnings)


def incident_timeline(incident: Incident, *, decoder: CrashDecoder | None = None) -> Timeline:
    """The timeline of an incident directory: its evidence bundles and event files."""
    root = incident.directory
    return build_timeline(
        (_bundle_source(entry) for entry in incident.evidence),
        ((path, _relative(path, root)) for path in incident.event_files),
        decoder=decoder,
    )


def timeline_from_paths(paths: Sequence[str | Path], *,
                        decoder: CrashDecoder | None = None) -> tuple[Timeline, Incident | None]:
    """Incident directories, bundle directories and event files, in any mix.

    Returns the timeline and the (first) incident, if one was given.
    """
    bundles: list[BundleSource] = []
    files: list[tuple[Path, str | None]] = []
    incident: Incident | None = None
    for item in paths:
        path = Path(item)
        if path.is_dir() and (path / INCIDENT_FILE).is_file() or path.name == INCIDENT_FILE:
            loaded = load_incident(path)
            incident = incident or loaded
            bundles.extend(_bundle_source(entry) for entry in loaded.evidence)
            files.extend((p, _relative(p, loaded.directory)) for p in loaded.event_files)
        elif path.is_dir() and (path / "manifest.json").is_file():
            bundles.append(BundleSource(path, evidence_name=str(path)))
        elif path.is_file() and path.suffix.lower() in EVENT_SUFFIXES:
            files.append((path, str(path)))
        elif not path.exists():
            raise InputError("no such file or directory", path=path)
        else:
            raise InputError("not an incident directory, evidence bundle or event file",
                             path=path, remedy="pass a directory holding incident.yaml, a "
                             "bundle directory (with manifest.json), or a .csv/.jsonl/.yaml "
                             "event file")
    return build_timeline(bundles, files, decoder=decoder), incident


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while events are read.

    Reading creates millions of small tuples that live on (the events); each
    full collection would walk all of them again, which costs about a fifth
    of the reading time for a million events.  Events hold no reference
    cycles, so nothing is lost by collecting once afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _bundle_source(entry: EvidenceEntry) -> BundleSource:
    return BundleSource(entry.path, entry.device, entry.name, entry.target,
                        entry.host_clock_offset_us)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
