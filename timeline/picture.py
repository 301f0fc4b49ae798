"""The timeline as a picture: a self-contained SVG, and an HTML page around it.

One swimlane per device and per external source; faults, resets, boots,
deploys, config pushes, alerts and captures are marked with distinct shapes
and colours and a short label, log lines are small ticks.  Deploys and
config pushes also draw a faint vertical line across every lane: "what
changed" is what a reader looks for first.

The time axis is *compressed*: the distance between two consecutive marked
events grows with the logarithm of the time between them, so a 300 ms boot
loop and the hour of quiet before it both stay readable.  Order is exact,
spacing is not to scale; long gaps are labelled with their length on the
axis.  Each marked event shows its clock uncertainty as a whisker, or as a
dashed arrow when it is only known to have happened before a time.

No scripts, fonts or external references: the files open anywhere, and
``<title>`` elements give tooltips with the full text.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from timeline.model import (
    SEVERITY_RANK,
    Event,
    IsoFormatter,
    format_duration_us,
    format_uncertainty,
)
from timeline.render import key_events

LANE_LABEL_W = 180
RIGHT_PAD = 40
HEADER_H = 74
AXIS_H = 44
LANE_H = 78
LEGEND_H = 84
MIN_PLOT_W = 760
MAX_PLOT_W = 3600
MAX_ANCHORS = 3000
CHAR_W = 6.1               # average width of an 11 px sans-serif character
LABEL_ROWS = 3
AGGREGATE_PX = 240         # a repeated label this close to the last one is counted, not drawn
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass(frozen=True)
class MarkStyle:
    shape: str
    colour: str
    size: float
    legend: str


STYLES: dict[str, MarkStyle] = {
    "crash": MarkStyle("diamond", "#d62728", 8, "crash / fault"),
    "reset": MarkStyle("circle", "#ff7f0e", 6, "reset (red: fault, watchdog)"),
    "boot": MarkStyle("ring", "#2ca02c", 5.5, "boot (firmware version)"),
    "capture": MarkStyle("square", "#17becf", 4.5, "evidence capture"),
    "deploy": MarkStyle("square", "#1f77b4", 7, "deploy"),
    "config-push": MarkStyle("square-dot", "#9467bd", 7, "config push"),
    "alert": MarkStyle("triangle", "#e6a700", 7.5, "alert"),
    "ci": MarkStyle("triangle-down", "#7f7f7f", 6.5, "CI run"),
    "note": MarkStyle("circle", "#8c564b", 4.5, "note"),
    "action": MarkStyle("cross", "#2f4f4f", 6, "responder action"),
    "log": MarkStyle("tick", "#e6a700", 7, "log line at warning or above"),
}
CHANGE_KINDS = ("deploy", "config-push")
FAULT_RESET_COLOUR = "#d62728"


def render_svg(events: Sequence[Event], *, lanes: Sequence[str] | None = None,
               title: str = "Incident timeline") -> str:
    """The picture as an SVG document (UTF-8 text)."""
    return _Picture(events, lanes, title).svg()


def render_html(events: Sequence[Event], *, lanes: Sequence[str] | None = None,
                title: str = "Incident timeline", max_rows: int = 5000) -> str:
    """A self-contained HTML page: the picture, a legend, and the key events."""
    svg = render_svg(events, lanes=lanes, title=title)
    keys = key_events(events)
    fmt = IsoFormatter()
    rows = []
    for e in keys[:max_rows]:
        rows.append(
            f'<tr class="sev-{e.severity}"><td>{fmt.short(e.wall_us)}</td>'
            f"<td>{escape(format_uncertainty(e.uncertainty_us))}</td><td>{escape(e.lane)}</td>"
            f"<td>{e.kind}</td><td>{e.severity}</td><td>{escape(e.message)}</td>"
            f"<td><code>{escape(e.evidence or '')}</code></td></tr>")
    omitted = len(events) - len(keys[:max_rows])
    note = (f"<p>{omitted} further event(s), mostly routine log lines, are not listed here; "
            "the Markdown and JSONL outputs hold every event.</p>" if omitted else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>
body {{ font-family: {FONT}; margin: 1.5em; color: #222; }}
.picture {{ overflow-x: auto; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 1em; }}
th, td {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
tr.sev-critical td {{ background: #fde0e0; }}
tr.sev-error td {{ background: #feeede; }}
tr.sev-warning td {{ background: #fff6d6; }}
code {{ font-size: 11px; }}
</style>
</head>
<body>
<h1>{escape(title)}</h1>
<div class="picture">
{svg}
</div>
<h2>Key events</h2>
<table>
<tr><th>time (UTC)</th><th>±</th><th>device / source</th><th>kind</th><th>severity</th>
<th>message</th><th>evidence</th></tr>
{chr(10).join(rows)}
</table>
{note}
</body>
</html>
"""


class _Axis:
    """Compressed time axis: piecewise linear between anchors, log-spaced gaps."""

    def __init__(self, anchors_us: list[int], plot_w: float | None = None) -> None:
        if len(anchors_us) > MAX_ANCHORS:
            step = len(anchors_us) / MAX_ANCHORS
            picked = [anchors_us[int(i * step)] for i in range(MAX_ANCHORS)]
            anchors_us = sorted(set(picked + [anchors_us[-1]]))
        self.times = anchors_us
        raw = [0.0]
        for a, b in zip(anchors_us, anchors_us[1:]):
            raw.append(raw[-1] + self.gap_width(b - a))
        total = raw[-1]
        width = plot_w or min(MAX_PLOT_W, max(MIN_PLOT_W, total))
        scale = width / total if total > 0 else 1.0
        self.positions = [x * scale for x in raw]
        self.width = width if total > 0 else MIN_PLOT_W
        if total == 0:
            self.positions = [self.width / 2] * len(raw)

    @staticmethod
    def gap_width(gap_us: int) -> float:
        if gap_us <= 0:
            return 0.0
        return 6.0 + 16.0 * math.log10(1.0 + gap_us / 1000.0)

    def x(self, wall_us: int) -> float:
        times, pos = self.times, self.positions
        i = bisect_right(times, wall_us) - 1
        if i < 0:
            return pos[0]
        if i >= len(times) - 1:
            return pos[-1]
        t0, t1 = times[i], times[i + 1]
        return pos[i] + (pos[i + 1] - pos[i]) * (wall_us - t0) / (t1 - t0)


class _Picture:
    def __init__(self, events: Sequence[Event], lanes: Sequence[str] | None, title: str) -> None:
        self.events = events
        self.title = title
        self.keys = key_events(events)
        self.lanes = list(lanes) if lanes is not None else _lanes(events)
        anchors = {e.wall_us for e in self.keys}
        for e in self.keys:
            end = e.detail("capture_end_us")
            if isinstance(end, int):
                anchors.add(end)
        if events:
            anchors.add(min(e.wall_us for e in events))
            anchors.add(max(e.wall_us for e in events))
        self.axis = _Axis(sorted(anchors) or [0])
        self.x0 = LANE_LABEL_W
        self.width = round(LANE_LABEL_W + self.axis.width + RIGHT_PAD)
        self.lanes_top = HEADER_H + AXIS_H
        self.height = self.lanes_top + LANE_H * max(1, len(self.lanes)) + LEGEND_H
        self.fmt = IsoFormatter()
        self.out: list[str] = []

    def X(self, wall_us: int) -> float:
        return self.x0 + self.axis.x(wall_us)

    def lane_y(self, lane: str) -> float:
        """The marker baseline of a lane."""
        return self.lanes_top + self.lanes.index(lane) * LANE_H + LANE_H - 22

    # -- the document ------------------------------------------------------------------

    def svg(self) -> str:
        w, h = self.width, self.height
        self.out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="{FONT}" font-size="11">',
            f"<title>{escape(self.title)}</title>",
            f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
        ]
        self._header()
        self._lanes()
        self._axis()
        self._changes()
        self._captures()
        self._ticks()
        self._marks()
        self._legend()
        self.out.append("</svg>")
        return "\n".join(self.out) + "\n"

    def _header(self) -> None:
        days = sorted({self.fmt.short(t)[:10] for t in (self.axis.times[0], self.axis.times[-1])})
        when = " to ".join(days)
        self.out.append(f'<text x="16" y="26" font-size="18" font-weight="bold">'
                        f"{escape(self.title)}</text>")
        self.out.append(
            f'<text x="16" y="46" fill="#444">All times UTC, {escape(when)}. '
            f"{len(self.events)} events, {len(self.keys)} marked.</text>")
        self.out.append(
            '<text x="16" y="62" fill="#666" font-size="10">The time axis is compressed: '
            "quiet stretches are shortened and labelled with their length; order is exact, "
            "spacing is not to scale. Whiskers show each event's clock uncertainty.</text>")

    def _lanes(self) -> None:
        device_lanes = {e.lane for e in self.events if e.source in ("console", "capture")}
        versions: dict[str, list[str]] = {}
        for e in self.keys:
            version = e.detail("version")
            if e.kind == "boot" and isinstance(version, str):
                seen = versions.setdefault(e.lane, [])
                if not seen or seen[-1] != version:
                    seen.append(version)
        right = self.x0 + self.axis.width + RIGHT_PAD / 2
        for i, lane in enumerate(self.lanes):
            top = self.lanes_top + i * LANE_H
            fill = "#f6f7f9" if i % 2 == 0 else "#ffffff"
            self.out.append(f'<rect x="0" y="{top}" width="{self.width}" height="{LANE_H}" '
                            f'fill="{fill}"/>')
            self.out.append(f'<line x1="{self.x0 - 8}" y1="{top + LANE_H - 22}" x2="{right}" '
                            f'y2="{top + LANE_H - 22}" stroke="#d0d4da"/>')
            what = "event source"
            if lane in device_lanes:
                what = "device"
                if lane in versions:
                    what += ", firmware " + " → ".join(versions[lane])
            self.out.append(f'<text x="12" y="{top + LANE_H / 2}" font-size="13" '
                            f'font-weight="bold">{escape(_clip(lane, 22))}</text>')
            self.out.append(f'<text x="12" y="{top + LANE_H / 2 + 15}" fill="#666" '
                            f'font-size="10">{what}</text>')

    def _axis(self) -> None:
        y = self.lanes_top - 10
        left, right = self.x0, self.x0 + self.axis.width
        out = self.out
        out.append(f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#333"/>')
        last_label = -1e9
        previous_day = ""
        times, pos = self.axis.times, self.axis.positions
        for i, (t, p) in enumerate(zip(times, pos)):
            x = self.x0 + p
            out.append(f'<line x1="{x:.1f}" y1="{y - 3}" x2="{x:.1f}" y2="{y + 3}" stroke="#333"/>')
            if x - last_label >= 92:
                stamp = self.fmt.short(t)
                day, clock = stamp[:10], stamp[11:]
                text = clock if day == previous_day else f"{day[5:]} {clock}"
                previous_day = day
                out.append(f'<text x="{x:.1f}" y="{y - 8}" text-anchor="middle" '
                           f'font-size="10">{text}</text>')
                last_label = x
            if i + 1 < len(times):
                gap = times[i + 1] - t
                width = pos[i + 1] - p
                if gap >= 1_000_000 and width >= 44:
                    mid = x + width / 2
                    out.append(f'<path d="M{mid - 4:.1f},{y + 5} l4,-10 M{mid:.1f},{y + 5} '
                               f'l4,-10" stroke="#888"/>')
                    out.append(f'<text x="{mid:.1f}" y="{y + 15}" text-anchor="middle" '
                               f'font-size="9" fill="#777">+{format_duration_us(gap)}</text>')

    def _changes(self) -> None:
        bottom = self.lanes_top + LANE_H * len(self.lanes)
        for e in self.keys:
            if e.kind in CHANGE_KINDS and e.lane in self.lanes:
                x = self.X(e.wall_us)
                colour = STYLES[e.kind].colour
                self.out.append(f'<line x1="{x:.1f}" y1="{self.lanes_top}" x2="{x:.1f}" '
                                f'y2="{bottom}" stroke="{colour}" stroke-opacity="0.35" '
                                f'stroke-dasharray="4 3"/>')

    def _captures(self) -> None:
        for e in self.keys:
            end = e.detail("capture_end_us")
            if e.kind == "capture" and isinstance(end, int) and e.lane in self.lanes:
                x1, x2 = self.X(e.wall_us), self.X(end)
                y = self.lane_y(e.lane) + 8
                self.out.append(
                    f'<rect x="{x1:.1f}" y="{y}" width="{max(2.0, x2 - x1):.1f}" height="7" '
                    f'fill="{STYLES["capture"].colour}" fill-opacity="0.3">'
                    f"<title>evidence capture {escape(self.fmt.short(e.wall_us))} to "
                    f"{escape(self.fmt.short(end))}</title></rect>")

    def _ticks(self) -> None:
        ticks: dict[str, set[int]] = {}
        for e in self.events:
            if e.kind == "log" and SEVERITY_RANK[e.severity] == 0 and e.lane in self.lanes:
                ticks.setdefault(e.lane, set()).add(round(self.X(e.wall_us)))
        for lane, xs in ticks.items():
            y = self.lane_y(lane)
            path = "".join(f"M{x},{y - 3}v6" for x in sorted(xs))
            self.out.append(f'<path d="{path}" stroke="#9aa3ad" stroke-width="1">'
                            f"<title>{escape(lane)}: routine log lines</title></path>")

    def _marks(self) -> None:
        rows: dict[str, list[float]] = {lane: [-1e9] * LABEL_ROWS for lane in self.lanes}
        recent: dict[str, dict[str, _Label]] = {lane: {} for lane in self.lanes}
        labels: list[_Label] = []
        right = self.x0 + self.axis.width + RIGHT_PAD
        boots = {(e.lane, e.wall_us) for e in self.keys if e.kind == "boot"}
        # Resets are drawn last, as a dot inside the ring of the boot they caused.
        ordered = sorted(self.keys, key=lambda e: e.kind == "reset")
        for e in ordered:
            if e.lane not in self.lanes:
                continue
            style = STYLES.get(e.kind, STYLES["note"])
            with_boot = e.kind == "reset" and (e.lane, e.wall_us) in boots
            if e.kind == "reset" and e.severity in ("error", "critical"):
                style = MarkStyle("circle", FAULT_RESET_COLOUR, style.size, style.legend)
            if with_boot:
                style = MarkStyle("circle", style.colour, 3.2, style.legend)
            x, y = self.X(e.wall_us), self.lane_y(e.lane)
            tooltip = (f"{self.fmt.short(e.wall_us)} UTC "
                       f"({format_uncertainty(e.uncertainty_us)}, {e.time_basis}) "
                       f"{e.lane}: {e.message}")
            self.out.append(f"<g><title>{escape(tooltip)}</title>")
            self._whisker(e, x, y)
            self.out.append(_shape(style, x, y, e))
            self.out.append("</g>")
            if with_boot:
                continue  # the boot's label names the reset
            text = _label(e)
            width = len(text) * CHAR_W + 4
            free = rows[e.lane]
            row = next((r for r in range(LABEL_ROWS) if x + 5 >= free[r] + 6), None)
            previous = recent[e.lane].get(text)
            if row is None or (previous is not None and x - previous.x < AGGREGATE_PX):
                # No room, or the same label just before: count it there instead.
                if previous is not None and x - previous.x < AGGREGATE_PX:
                    previous.count += 1
                continue
            free[row] = x + 5 + width + 18
            label = _Label(x + 5, y - 12 - row * 13, e.severity, text)
            if x + 5 + width > right:
                label.anchor_end = True
                label.x = x - 5
            labels.append(label)
            recent[e.lane][text] = label
        for label in labels:
            shown = label.text if label.count == 1 else f"{label.text} (×{label.count})"
            weight = ' font-weight="bold"' if label.severity in ("error", "critical") else ""
            anchor = ' text-anchor="end"' if label.anchor_end else ""
            self.out.append(f'<text x="{label.x:.1f}" y="{label.y}" fill="#222"{weight}{anchor}>'
                            f"{escape(shown)}</text>")

    def _whisker(self, e: Event, x: float, y: float) -> None:
        if e.uncertainty_us is None:
            self.out.append(f'<path d="M{x:.1f},{y} h-34 m6,-4 l-6,4 l6,4" fill="none" '
                            f'stroke="#555" stroke-dasharray="3 2"/>')
            self.out.append(f'<text x="{x - 38:.1f}" y="{y + 14}" font-size="9" '
                            f'fill="#555">at or before</text>')
            return
        if e.uncertainty_us == 0:
            return
        x1 = self.X(e.wall_us - e.uncertainty_us)
        x2 = self.X(e.wall_us + e.uncertainty_us)
        if x2 - x1 < 3:
            return
        self.out.append(f'<path d="M{x1:.1f},{y - 3}v6M{x1:.1f},{y}H{x2:.1f}M{x2:.1f},{y - 3}v6" '
                        f'stroke="#555" stroke-width="1" fill="none"/>')

    def _legend(self) -> None:
        y = self.lanes_top + LANE_H * len(self.lanes) + 26
        x = 16.0
        self.out.append(f'<text x="{x}" y="{y - 8}" font-size="10" fill="#666">Legend</text>')
        seen = {e.kind for e in self.keys} | {"crash", "reset", "boot", "deploy", "config-push"}
        items: list[tuple[str, str]] = [
            (_shape(STYLES[kind], 6, 6, None), STYLES[kind].legend)
            for kind in STYLES if kind in seen]
        items += [
            ('<path d="M2,3v6M2,6h24M26,3v6" stroke="#555" fill="none"/>', "clock uncertainty"),
            ('<path d="M3,6 m26,0 h-26 m6,-4 l-6,4 l6,4" fill="none" stroke="#555" '
             'stroke-dasharray="3 2"/>', "happened at or before"),
            ('<path d="M3,3v6M6,3v6M9,3v6" stroke="#9aa3ad"/>', "routine log lines"),
        ]
        for symbol, text in items:
            icon_w = 34 if "h24" in symbol or "h-26" in symbol else 18
            width = icon_w + len(text) * CHAR_W + 14
            if x + width > self.width - 8:
                x = 16.0
                y += 20
            self.out.append(f'<g transform="translate({x:.1f},{y})">{symbol}</g>')
            self.out.append(f'<text x="{x + icon_w:.1f}" y="{y + 10}">{escape(text)}</text>')
            x += width


@dataclass
class _Label:
    x: float
    y: float
    severity: str
    text: str
    count: int = 1
    anchor_end: bool = False


def _shape(style: MarkStyle, x: float, y: float, e: Event | None) -> str:
    s = style.size
    c = style.colour
    stroke = ' stroke="#000" stroke-width="1.2"' if e is not None and e.severity in (
        "error", "critical") and style.shape != "ring" else ' stroke="#fff" stroke-width="0.8"'
    if style.shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y}" r="{s}" fill="{c}"{stroke}/>'
    if style.shape == "ring":
        return (f'<circle cx="{x:.1f}" cy="{y}" r="{s}" fill="#fff" stroke="{c}" '
                f'stroke-width="2.5"/>')
    square = f'x="{x - s:.1f}" y="{y - s}" width="{2 * s}" height="{2 * s}"'
    if style.shape == "square":
        return f'<rect {square} fill="{c}"{stroke}/>'
    if style.shape == "square-dot":
        return (f'<rect {square} rx="2" fill="{c}"{stroke}/>'
                f'<circle cx="{x:.1f}" cy="{y}" r="{s / 2.6:.1f}" fill="#fff"/>')
    if style.shape == "diamond":
        return (f'<path d="M{x:.1f},{y - s}L{x + s:.1f},{y}L{x:.1f},{y + s}L{x - s:.1f},{y}Z" '
                f'fill="{c}"{stroke}/>')
    if style.shape == "triangle":
        return (f'<path d="M{x:.1f},{y - s}L{x + s:.1f},{y + s * 0.8:.1f}'
                f'L{x - s:.1f},{y + s * 0.8:.1f}Z" fill="{c}"{stroke}/>')
    if style.shape == "triangle-down":
        return (f'<path d="M{x:.1f},{y + s}L{x + s:.1f},{y - s * 0.8:.1f}'
                f'L{x - s:.1f},{y - s * 0.8:.1f}Z" fill="{c}"{stroke}/>')
    if style.shape == "cross":
        return (f'<path d="M{x - s:.1f},{y - s}L{x + s:.1f},{y + s}M{x - s:.1f},{y + s}'
                f'L{x + s:.1f},{y - s}" stroke="{c}" stroke-width="3"/>')
    # "tick": a log line worth seeing
    return f'<path d="M{x:.1f},{y - s}v{2 * s}" stroke="{c}" stroke-width="3"/>'


def _label(e: Event) -> str:
    if e.kind == "crash" and e.crash is not None:
        fault = e.crash.fault or "fault"
        if e.crash.decoded is not None and e.crash.decoded.function:
            return f"crash: {fault} in {e.crash.decoded.function}"
        return f"crash: {fault}"
    if e.kind == "boot":
        return f"boot {e.detail('version') or ''} (reset: {e.detail('reset_reason')})"
    if e.kind == "capture":
        return _clip(e.message.replace("evidence ", ""), 30)
    return _clip(e.message, 34)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lanes(events: Sequence[Event]) -> list[str]:
    devices: dict[str, None] = {}
    sources: dict[str, None] = {}
    for e in events:
        (devices if e.source in ("console", "capture") else sources).setdefault(e.lane, None)
    return list(devices) + [s for s in sources if s not in devices]
