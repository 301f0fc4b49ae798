"""Clock alignment: device uptime to wall-clock time, one fit per boot.

A device counts uptime from its own oscillator; the capture host stamps each
console line with its own (NTP-disciplined) clock when the line's first byte
arrives.  Within one boot the relation is a straight line,

    wall_us = wall_at_mean + rate * 1000 * (uptime_ms - mean_uptime_ms)

where ``rate`` is the ratio of the host's second to the device's (``1 +``
the oscillator's error) and the scatter around the line is the host's
receive latency (USB buffering, the serial driver).  :func:`fit_segment`
estimates the line by least squares over every line that carries an uptime
stamp; :class:`ClockFit` maps any uptime of that boot to wall time with an
uncertainty that grows with the scatter and with distance from the points
it was fitted on.

Rules, and why:

* One segment per boot: uptime restarts at every reset, so a fit may never
  span a boot banner (or an uptime that goes backwards, see
  :mod:`timeline.bundle_events`).
* The slope is only fitted when the points span at least
  :data:`MIN_DRIFT_SPAN_MS` and number at least three; otherwise the rate is
  taken as exactly 1 and the uncertainty grows by :data:`MAX_DRIFT_PPM`
  (a generous bound for a crystal) per unit of distance from the points.
* Latency spikes (a stalled USB transfer) only ever delay a line, so
  points far *later* than the fit are dropped once and the line refitted.
* Latency is one-sided: a line arrives after the device sent it, never
  before.  The least-squares line runs through the *mean* latency, so it
  is moved down to the fastest arrivals (the :data:`FLOOR_QUANTILE` of the
  residuals); what remains is the link's minimum latency, well under a
  millisecond for a USB serial adapter.  Host receive times of lines with
  no uptime get the same correction, so both kinds of event agree.
* Lines that carry no uptime (banners, command replies) keep their host
  receive time, but the console is one ordered byte stream, so
  :func:`settle_stream_order` keeps every device event in print order and
  places events with no time at all between their neighbours, with the gap
  as their uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Bound on an oscillator's frequency error, used when the drift cannot be fitted.
MAX_DRIFT_PPM = 200.0
#: Drift is fitted only over at least this much uptime.
MIN_DRIFT_SPAN_MS = 1000
#: Assumed scatter of host receive latency when a boot has too few stamped lines to
#: measure it and the capture has no other boot to borrow it from.
DEFAULT_LATENCY_US = 20_000
#: A fitted drift larger than this is reported as implausible for a crystal.
PLAUSIBLE_DRIFT_PPM = 5000.0
#: Uptime stamps are whole milliseconds (``[%8u ms]``).
UPTIME_RESOLUTION_US = 500
#: Uncertainties are this many standard deviations wide.
COVERAGE_SIGMAS = 2.0
#: The fit is moved down to this quantile of its residuals (the fastest arrivals).
FLOOR_QUANTILE = 0.1
#: Points needed to estimate that quantile.
MIN_POINTS_FOR_FLOOR = 10
#: Points later than the fit by more than this many robust sigmas are latency spikes.
OUTLIER_SIGMAS = 6.0


@dataclass(frozen=True)
class ClockFit:
    """The uptime-to-wall mapping of one boot of one device."""

    device: str
    boot: int
    points: int                  # stamped lines the fit used
    dropped_points: int          # latency spikes left out
    mean_uptime_ms: float
    wall_at_mean_us: float
    rate: float                  # host seconds per device second
    drift_fitted: bool
    residual_rms_us: float       # scatter of the host receive times around the line
    residual_max_us: float
    sxx_ms2: float               # sum of squared uptime deviations (for the prediction interval)
    latency_sigma_us: float      # receive-latency scatter the uncertainty is built on
    latency_excess_us: float     # mean latency above the fastest arrivals, taken off every time
    first_uptime_ms: int
    last_uptime_ms: int
    warnings: tuple[str, ...] = ()

    @property
    def drift_ppm(self) -> float:
        """Device oscillator error: positive when the device's clock runs fast."""
        return (1.0 / self.rate - 1.0) * 1e6

    def wall_us(self, uptime_ms: float) -> int:
        return round(self.wall_at_mean_us - self.latency_excess_us
                     + self.rate * 1000.0 * (uptime_ms - self.mean_uptime_ms))

    def uncertainty_us(self, uptime_ms: float) -> int:
        """Half-width of the interval the true wall time of ``uptime_ms`` lies in."""
        distance_ms = abs(uptime_ms - self.mean_uptime_ms)
        sigma = self.latency_sigma_us
        if self.drift_fitted:
            spread = sigma * math.sqrt(
                1.0 + 1.0 / self.points + distance_ms * distance_ms / self.sxx_ms2)
            drift = 0.0
        else:
            spread = sigma * math.sqrt(1.0 + 1.0 / self.points)
            drift = MAX_DRIFT_PPM * 1e-6 * distance_ms * 1000.0
        return max(1000, round(COVERAGE_SIGMAS * spread + drift + UPTIME_RESOLUTION_US))

    def describe(self) -> str:
        drift = f"drift {self.drift_ppm:+.0f} ppm" if self.drift_fitted else \
            f"drift not fitted (±{MAX_DRIFT_PPM:.0f} ppm allowed)"
        return (f"{self.points} stamped line(s) over uptime {self.first_uptime_ms}.."
                f"{self.last_uptime_ms} ms, {drift}, scatter {self.residual_rms_us / 1000:.1f} ms "
                f"rms")


def fit_segment(device: str, boot: int, uptimes_ms: Sequence[int], walls_us: Sequence[int],
                *, fallback_sigma_us: float | None = None,
                fallback_excess_us: float | None = None) -> ClockFit | None:
    """Least-squares fit of host receive time against uptime; ``None`` without points.

    With fewer than three points the scatter cannot be measured;
    ``fallback_sigma_us`` (the scatter seen in the same capture's other
    boots) or :data:`DEFAULT_LATENCY_US` stands in for it.  Likewise the
    latency excess needs :data:`MIN_POINTS_FOR_FLOOR` points, else
    ``fallback_excess_us`` (or zero) is used.
    """
    n = len(uptimes_ms)
    if n == 0:
        return None
    fit = _least_squares(uptimes_ms, walls_us)
    dropped = 0
    if fit is not None and n >= 5:
        keep = _drop_latency_spikes(uptimes_ms, walls_us, fit)
        if keep is not None and len(keep[0]) < n:
            dropped = n - len(keep[0])
            uptimes_ms, walls_us = keep
            fit = _least_squares(uptimes_ms, walls_us)
    assert fit is not None
    mean_x, mean_y, rate, fitted, rms, worst, sxx = fit
    warnings: list[str] = []
    drift_ppm = (1.0 / rate - 1.0) * 1e6
    if fitted and abs(drift_ppm) > PLAUSIBLE_DRIFT_PPM:
        warnings.append(f"fitted drift {drift_ppm:+.0f} ppm is implausible for a crystal; "
                        "check that the uptime stamps come from one clock")
    if dropped:
        warnings.append(f"{dropped} line(s) arrived much later than the others and were left "
                        "out of the fit (host receive latency spikes)")
    if len(uptimes_ms) >= MIN_POINTS_FOR_FLOOR:
        residuals = sorted(y - mean_y - rate * 1000.0 * (x - mean_x)
                           for x, y in zip(uptimes_ms, walls_us))
        excess = max(0.0, -residuals[int(len(residuals) * FLOOR_QUANTILE)])
    else:
        excess = fallback_excess_us or 0.0
    return ClockFit(device=device, boot=boot, points=len(uptimes_ms), dropped_points=dropped,
                    mean_uptime_ms=mean_x, wall_at_mean_us=mean_y, rate=rate,
                    drift_fitted=fitted, residual_rms_us=rms, residual_max_us=worst,
                    sxx_ms2=sxx, latency_sigma_us=rms if len(uptimes_ms) >= 3 else
                    (fallback_sigma_us or DEFAULT_LATENCY_US), latency_excess_us=excess,
                    first_uptime_ms=min(uptimes_ms),
                    last_uptime_ms=max(uptimes_ms), warnings=tuple(warnings))


_Fit = tuple[float, float, float, bool, float, float, float]


def _least_squares(xs: Sequence[int], ys: Sequence[int]) -> _Fit | None:
    n = len(xs)
    if n == 0:
        return None
    mean_x = sum(xs) / n
    base_y = ys[0]  # centre on an integer first: wall times in µs exceed float's exact range/2
    mean_dy = sum(y - base_y for y in ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    span = max(xs) - min(xs)
    fitted = n >= 3 and span >= MIN_DRIFT_SPAN_MS and sxx > 0
    if fitted:
        sxy = sum((x - mean_x) * (y - base_y - mean_dy) for x, y in zip(xs, ys))
        slope = sxy / sxx            # µs of wall per ms of uptime
        rate = slope / 1000.0
        dof = n - 2
    else:
        rate = 1.0
        dof = n - 1
    ssr = 0.0
    worst = 0.0
    for x, y in zip(xs, ys):
        r = (y - base_y - mean_dy) - rate * 1000.0 * (x - mean_x)
        ssr += r * r
        worst = max(worst, abs(r))
    rms = math.sqrt(ssr / dof) if dof > 0 else 0.0
    return mean_x, base_y + mean_dy, rate, fitted, rms, worst, sxx


def _drop_latency_spikes(xs: Sequence[int], ys: Sequence[int],
                         fit: _Fit) -> tuple[list[int], list[int]] | None:
    mean_x, mean_y, rate = fit[0], fit[1], fit[2]
    residuals = [y - mean_y - rate * 1000.0 * (x - mean_x) for x, y in zip(xs, ys)]
    ordered = sorted(residuals)
    median = ordered[len(ordered) // 2]
    mad = sorted(abs(r - median) for r in residuals)[len(residuals) // 2]
    limit = median + max(OUTLIER_SIGMAS * 1.4826 * mad, 5_000.0)
    keep_x = [x for x, r in zip(xs, residuals) if r <= limit]
    if len(keep_x) == len(xs) or len(keep_x) < 3:
        return None
    keep_y = [y for y, r in zip(ys, residuals) if r <= limit]
    return keep_x, keep_y


@dataclass
class StreamSlot:
    """One device event's time while its capture is being settled (mutable, internal)."""

    wall_us: int | None
    uncertainty_us: int | None
    strong: bool            # uptime-aligned: not moved by settling


def settle_stream_order(slots: Sequence[StreamSlot], start_us: int | None,
                        end_us: int | None) -> None:
    """Keep events of one console stream in print order; place the ones with no time.

    Strong slots (uptime-aligned) stay where their fit put them.  Weak slots
    (host receive times) are clamped between the strong slots around them.
    Slots with no time at all go midway between their placed neighbours (or
    the capture's start and end), with half the gap as their uncertainty.
    """
    last: int | None = None
    for slot in slots:
        if slot.wall_us is None:
            continue
        if not slot.strong and last is not None and slot.wall_us < last:
            slot.wall_us = last
        last = slot.wall_us if last is None else max(last, slot.wall_us)
    following: int | None = None
    for slot in reversed(slots):
        if slot.wall_us is None:
            continue
        if not slot.strong and following is not None and slot.wall_us > following:
            slot.wall_us = following
        following = slot.wall_us if following is None else min(following, slot.wall_us)
    _interpolate_gaps(slots, start_us, end_us)


def _interpolate_gaps(slots: Sequence[StreamSlot], start_us: int | None,
                      end_us: int | None) -> None:
    i = 0
    n = len(slots)
    while i < n:
        if slots[i].wall_us is not None:
            i += 1
            continue
        j = i
        while j < n and slots[j].wall_us is None:
            j += 1
        before = slots[i - 1].wall_us if i > 0 else start_us
        after = slots[j].wall_us if j < n else end_us
        if before is None and after is None:
            raise ValueError("no time anywhere in the stream and no capture bounds")
        if before is None:
            before = after
        if after is None:
            after = before
        assert before is not None and after is not None
        if after < before:
            after = before
        middle = (before + after) // 2
        for k in range(i, j):
            slots[k].wall_us = middle
            slots[k].uncertainty_us = max(1000, (after - before + 1) // 2)
        i = j
