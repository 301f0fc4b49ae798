"""Timeline and blameless post-mortem: device events, deploys and config pushes on one clock.

Layers, bottom up:

``model``          :class:`Event` (frozen, times in UTC microseconds with their basis and
                   uncertainty), :class:`CrashInfo`, :class:`DecodedFault`
``clock``          uptime -> wall clock: one least-squares fit per boot, stream-order settling
``bundle_events``  events from an evidence bundle's serial console and manifest
``events_file``    external events from CSV, JSONL and YAML files (docs/events-format.md)
``incident``       the incident directory and incident.yaml (docs/incident-format.md)
``builder``        :class:`Timeline`: everything sorted onto one clock
``render``         Markdown table and Timesketch JSONL (streaming)
``picture``        the SVG picture and the HTML page
``blameless``      the blameless-language check
``report``         the post-mortem in Markdown
``cli``            the click commands (``crashcart timeline``, ``crashcart report``)
``synth``          synthetic captures with known truth (tests, fixtures, benchmark)
"""

from timeline.blameless import LanguageFinding, check_incident_language
from timeline.builder import (
    BundleSource,
    Timeline,
    build_timeline,
    incident_timeline,
    timeline_from_paths,
)
from timeline.bundle_events import BundleCapture, CrashDecoder, read_bundle
from timeline.clock import ClockFit, fit_segment
from timeline.events_file import load_event_file
from timeline.incident import Incident, load_incident
from timeline.model import CrashInfo, DecodedFault, Event
from timeline.picture import render_html, render_svg
from timeline.render import write_jsonl, write_markdown
from timeline.report import Report, build_report, write_report

__all__ = [
    "BundleCapture", "BundleSource", "ClockFit", "CrashDecoder", "CrashInfo", "DecodedFault",
    "Event", "Incident", "LanguageFinding", "Report", "Timeline", "build_report",
    "build_timeline", "check_incident_language", "fit_segment", "incident_timeline",
    "load_event_file", "load_incident", "read_bundle", "render_html", "render_svg",
    "timeline_from_paths", "write_jsonl", "write_markdown", "write_report",
]
