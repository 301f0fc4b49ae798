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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import mul, sub

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

    def placer(self) -> Callable[[float], tuple[int, int]]:
        """A fast ``uptime_ms -> (wall_us, uncertainty_us)`` for many events of this boot."""
        base, k, mean, sigma, fixed, per_ms2, drift = self._placement()
        sqrt = math.sqrt

        def place(uptime_ms: float) -> tuple[int, int]:
            d = uptime_ms - mean
            spread = sigma * sqrt(fixed + d * d * per_ms2) + drift * abs(d)
            return round(base + k * d), max(1000, round(spread + UPTIME_RESOLUTION_US))

        return place

    def place_all(self, uptimes_ms: Sequence[float | None]
                  ) -> tuple[list[int | None], list[int | None]]:
        """:meth:`placer` for a whole column: wall times and uncertainties, ``None`` for ``None``.

        The same arithmetic as ``placer``, in comprehensions rather than a call per
        uptime (a boot can hold hundreds of thousands of stamped lines).
        """
        base, k, mean, sigma, fixed, per_ms2, drift = self._placement()
        sqrt = math.sqrt
        ds = [None if u is None else u - mean for u in uptimes_ms]
        walls = [None if d is None else round(base + k * d) for d in ds]
        uncertainties = [
            None if d is None else
            max(1000, round(sigma * sqrt(fixed + d * d * per_ms2) + drift * abs(d)
                            + UPTIME_RESOLUTION_US))
            for d in ds]
        return walls, uncertainties

    def _placement(self) -> tuple[float, float, float, float, float, float, float]:
        """The constants of :meth:`wall_us` and :meth:`uncertainty_us`, for fast placement."""
        return (self.wall_at_mean_us - self.latency_excess_us,    # base
                self.rate * 1000.0,                                # k: wall µs per uptime ms
                self.mean_uptime_ms,
                COVERAGE_SIGMAS * self.latency_sigma_us,
                1.0 + 1.0 / self.points,
                1.0 / self.sxx_ms2 if self.drift_fitted else 0.0,  # per_ms2
                0.0 if self.drift_fitted else MAX_DRIFT_PPM * 1e-3)  # drift, µs per ms

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
    fit = _Fit(uptimes_ms, walls_us)
    dropped = 0
    if n >= 5:
        keep = fit.without_latency_spikes()
        if keep is not None:
            dropped = n - len(keep[0])
            fit = _Fit(*keep)
    warnings: list[str] = []
    drift_ppm = (1.0 / fit.rate - 1.0) * 1e6
    if fit.fitted and abs(drift_ppm) > PLAUSIBLE_DRIFT_PPM:
        warnings.append(f"fitted drift {drift_ppm:+.0f} ppm is implausible for a crystal; "
                        "check that the uptime stamps come from one clock")
    if dropped:
        warnings.append(f"{dropped} line(s) arrived much later than the others and were left "
                        "out of the fit (host receive latency spikes)")
    if fit.n >= MIN_POINTS_FOR_FLOOR:
        ordered = sorted(_sample(fit.residuals()))
        excess = max(0.0, -ordered[int(len(ordered) * FLOOR_QUANTILE)])
    else:
        excess = fallback_excess_us or 0.0
    return ClockFit(device=device, boot=boot, points=fit.n, dropped_points=dropped,
                    mean_uptime_ms=fit.mean_x, wall_at_mean_us=fit.mean_y, rate=fit.rate,
                    drift_fitted=fit.fitted, residual_rms_us=fit.rms, residual_max_us=fit.worst,
                    sxx_ms2=fit.sxx, latency_sigma_us=fit.rms if fit.n >= 3 else
                    (fallback_sigma_us or DEFAULT_LATENCY_US), latency_excess_us=excess,
                    first_uptime_ms=min(fit.xs), last_uptime_ms=max(fit.xs),
                    warnings=tuple(warnings))


class _Fit:
    """Ordinary least squares of wall (µs) on uptime (ms), in exact integer sums.

    Uptimes and wall times are shifted to their first value first, so the
    sums are small exact integers even for a device up for weeks.
    """

    def __init__(self, xs: Sequence[int], ys: Sequence[int]) -> None:
        self.xs, self.ys = xs, ys
        n = self.n = len(xs)
        x0, y0 = xs[0], ys[0]
        dx = list(map(sub, xs, repeat(x0)))
        dy = list(map(sub, ys, repeat(y0)))
        sx, sy = sum(dx), sum(dy)
        self.sxx = (n * sum(map(mul, dx, dx)) - sx * sx) / n
        self.mean_x = x0 + sx / n
        self.mean_y = y0 + sy / n
        span = max(dx) - min(dx)
        self.fitted = n >= 3 and span >= MIN_DRIFT_SPAN_MS and self.sxx > 0
        if self.fitted:
            sxy = (n * sum(map(mul, dx, dy)) - sx * sy) / n
            self.rate = sxy / self.sxx / 1000.0      # µs of wall per µs of uptime
            dof = n - 2
        else:
            self.rate = 1.0
            dof = n - 1
        # Computed once: the spike filter and the latency floor read them again.
        k = self.rate * 1000.0
        self._residuals = res = list(map(
            sub, map(sub, ys, repeat(self.mean_y)),
            map(mul, repeat(k), map(sub, xs, repeat(self.mean_x)))))
        self.rms = math.sqrt(sum(map(mul, res, res)) / dof) if dof > 0 else 0.0
        self.worst = max(max(res), -min(res))

    def residuals(self) -> list[float]:
        """``(y - mean_y) - k * (x - mean_x)`` for every point (do not change the list)."""
        return self._residuals

    def without_latency_spikes(self) -> tuple[list[int], list[int]] | None:
        """The points that are not far *later* than the line, or None if all are."""
        residuals = self.residuals()
        sample = _sample(residuals)
        median = sorted(sample)[len(sample) // 2]
        mad = sorted(abs(r - median) for r in sample)[len(sample) // 2]
        limit = median + max(OUTLIER_SIGMAS * 1.4826 * mad, 5_000.0)
        if max(residuals) <= limit:
            return None
        keep_x = [x for x, r in zip(self.xs, residuals) if r <= limit]
        if len(keep_x) < 3:
            return None
        keep_y = [y for y, r in zip(self.ys, residuals) if r <= limit]
        return keep_x, keep_y


def _sample(values: list[float], limit: int = 20_000) -> list[float]:
    """Every k-th value, so quantiles of a long boot cost a bounded sort."""
    if len(values) <= limit:
        return values
    return values[:: len(values) // limit + 1]


def settle_stream_order(walls_us: list[int | None], uncertainties_us: list[int | None],
                        strong: Sequence[bool], start_us: int | None,
                        end_us: int | None) -> None:
    """Keep the events of one console stream in print order; place the ones with no time.

    The three lists describe the stream's events in print order and are
    changed in place.  Strong events (uptime-aligned) stay where their fit
    put them.  Weak ones (host receive times) are clamped between the
    strong ones around them.  Events with no time at all go midway between
    their placed neighbours (or the capture's start and end), with half the
    gap as their uncertainty.
    """
    last: int | None = None
    for i, wall in enumerate(walls_us):
        if wall is None:
            continue
        if last is not None and wall < last:
            if not strong[i]:
                walls_us[i] = wall = last
        else:
            last = wall
    following: int | None = None
    for i in range(len(walls_us) - 1, -1, -1):
        wall = walls_us[i]
        if wall is None:
            continue
        if following is not None and wall > following:
            if not strong[i]:
                walls_us[i] = wall = following
        else:
            following = wall
    if None in walls_us:
        _interpolate_gaps(walls_us, uncertainties_us, start_us, end_us)


def _interpolate_gaps(walls_us: list[int | None], uncertainties_us: list[int | None],
                      start_us: int | None, end_us: int | None) -> None:
    i = 0
    n = len(walls_us)
    while i < n:
        if walls_us[i] is not None:
            i += 1
            continue
        j = i
        while j < n and walls_us[j] is None:
            j += 1
        before = walls_us[i - 1] if i > 0 else start_us
        after = walls_us[j] if j < n else end_us
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
            walls_us[k] = middle
            uncertainties_us[k] = max(1000, (after - before + 1) // 2)
        i = j
