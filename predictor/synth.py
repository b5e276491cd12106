"""Synthetic BurstGPT-like traces, for demos, tests and benchmarks without the real files.

The shape follows the published BurstGPT figures (Wang et al., "BurstGPT: A Real-World
Workload Dataset to Optimize LLM Serving Systems", KDD 2025; github.com/HPMLL/BurstGPT):
about 0.27 requests/s on average, a daily cycle that peaks at 14:00 and bottoms out
at 07:00 with a peak/valley ratio of hourly requests near 11.7, a milder weekly
cycle (quieter weekends), bursty arrivals (Gamma inter-arrivals with shape below 1,
so a coefficient of variation above 1), ChatGPT/GPT-4 about 85/15, API/Conversation
log about 90/10, long-tailed (Zipf-like) request tokens, bimodal ChatGPT response
tokens and about 1.8 % failures with 0 response tokens.

Arrivals are a renewal process with unit mean gap in "operational time", mapped onto
wall time through the inverse of the cumulative rate, so the cycles modulate the
rate without smoothing the bursts away. Everything is vectorised numpy.

>>> df = synthesize(1000, seed=1)
>>> list(df.columns)
['Timestamp', 'Model', 'Request tokens', 'Response tokens', 'Total tokens', 'Log Type']
>>> bool(df["Timestamp"].is_monotonic_increasing), df.equals(synthesize(1000, seed=1))
(True, True)
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from predictor.errors import ConfigError

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")

#: Mean arrival rate of BurstGPT_1 (requests per second).
MEAN_RATE = 0.27
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
PEAK_HOUR, VALLEY_HOUR, PEAK_VALLEY_RATIO = 14, 7, 11.7
#: Rate multiplier of Saturday and Sunday (days 5 and 6 from the start of the clock).
WEEKEND_FACTOR = 0.75
#: Gamma shape of the inter-arrival gaps in operational time: CV = 1/sqrt(shape).
BURST_SHAPE = 0.45
GPT4_SHARE, CONVERSATION_SHARE, FAILURE_SHARE = 0.15, 0.10, 0.018
#: Share of failures whose request tokens are also 0.
BOTH_ZERO_SHARE = 0.6

_STEP_S = 60.0  # resolution of the rate profile

#: Rate profiles: ``week`` (the slow daily and weekly cycles alone) and three whose level
#: moves within minutes on top of them.
VARIANTS = ("week", "bursty", "regimes", "drift")
#: ``bursty``: a base rate (relative) between bursts ...
BURSTY_BASE = 0.4
#: ... bursts that start this often on average (seconds) ...
BURSTY_EVERY_S = 120.0
#: ... and last this long on average (seconds), on a grid of BURSTY_STEP_S; their
#: log-normal heights make the mean relative rate 1 (about 7x the base within a burst)
BURSTY_MEAN_S = 30.0
BURSTY_STEP_S = 1.0
#: ``regimes``: constant rates over exponential spells of this mean (seconds) ...
REGIME_MEAN_S = 300.0
#: ... at log-normal levels with this log standard deviation (mean 1)
REGIME_SIGMA = 1.0
#: ``drift``: log rate an Ornstein-Uhlenbeck process with this time constant (seconds) ...
DRIFT_TAU_S = 600.0
#: ... and stationary standard deviation, stepped every DRIFT_STEP_S seconds
DRIFT_SIGMA = 0.8
DRIFT_STEP_S = 5.0


def _daily_shape(hour: np.ndarray) -> np.ndarray:
    """0 in the middle of the valley hour, 1 in the middle of the peak hour, linear between.

    It is the *logarithm* of the rate that follows this shape, so the rate ramps up
    geometrically and peaks sharply: the published busiest and quietest hours stand out
    from their neighbours even in a short, bursty trace.
    """
    lo, hi = VALLEY_HOUR + 0.5, PEAK_HOUR + 0.5
    h = (hour - lo) % 24.0  # hours since the bottom of the valley
    rise = hi - lo
    return np.where(h < rise, h / rise, 1.0 - (h - rise) / (24.0 - rise))


@lru_cache(maxsize=1)
def _week_profile() -> np.ndarray:
    """Relative rate per ``_STEP_S`` step over one week, mean 1."""
    t = (np.arange(int(WEEK_S / _STEP_S)) + 0.5) * _STEP_S
    hour = (t % DAY_S) / 3600.0
    shape = _daily_shape(hour)
    peak = (hour >= PEAK_HOUR) & (hour < PEAK_HOUR + 1)
    valley = (hour >= VALLEY_HOUR) & (hour < VALLEY_HOUR + 1)
    # calibrate the amplitude so that hourly *averages* keep the published peak/valley ratio
    log_amp = np.log(PEAK_VALLEY_RATIO)
    for _ in range(20):
        daily = np.exp(log_amp * shape)
        log_amp += np.log(PEAK_VALLEY_RATIO / (daily[peak].mean() / daily[valley].mean()))
    weekly = np.where((t // DAY_S) % 7 >= 5, WEEKEND_FACTOR, 1.0)
    profile = np.exp(log_amp * shape) * weekly
    profile.setflags(write=False)
    return profile / profile.mean()


def _op_times(rng: np.random.Generator, rows: int, variant: str, rate: float) -> np.ndarray:
    """Sorted arrival times of ``rows`` requests in operational time (unit mean rate)."""
    op = np.cumsum(rng.gamma(BURST_SHAPE, 1.0 / BURST_SHAPE, size=rows))
    if variant == "week" or rows == 0:
        return op
    # a renewal process in an inner clock, run at a fast-moving relative rate
    if variant == "bursty":
        lengths, levels = _burst_segments(rng, float(op[-1]), rate)
    else:
        lengths, levels = _fast_segments(rng, variant, float(op[-1]), rate)
    inner = np.concatenate([[0.0], np.cumsum(lengths * levels)])
    outer = np.concatenate([[0.0], np.cumsum(lengths)])
    return np.interp(op, inner, outer)


def _fast_segments(
    rng: np.random.Generator, variant: str, total: float, rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (operational time) and relative rates (mean 1) of piecewise-constant
    segments whose integral reaches ``total``."""
    lengths: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    reached, log_level, chunk = 0.0, 0.0, 1024
    while reached < total:
        if variant == "regimes":
            length = rng.exponential(REGIME_MEAN_S * rate, size=chunk)
            level = np.exp(REGIME_SIGMA * rng.standard_normal(chunk) - REGIME_SIGMA**2 / 2)
        else:  # drift: log rate an Ornstein-Uhlenbeck process sampled every DRIFT_STEP_S
            keep = math.exp(-DRIFT_STEP_S / DRIFT_TAU_S)
            shocks = DRIFT_SIGMA * math.sqrt(1.0 - keep * keep) * rng.standard_normal(chunk)
            logs = np.empty(chunk)
            for i, shock in enumerate(shocks.tolist()):
                log_level = keep * log_level + shock
                logs[i] = log_level
            length = np.full(chunk, DRIFT_STEP_S * rate)
            level = np.exp(logs - DRIFT_SIGMA**2 / 2)
        lengths.append(length)
        levels.append(level)
        reached += float(length @ level)
        chunk *= 2
    return np.concatenate(lengths), np.concatenate(levels)


def _burst_segments(
    rng: np.random.Generator, total: float, rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per ``BURSTY_STEP_S`` step, a relative rate (mean 1): ``BURSTY_BASE`` plus every
    burst under way. Bursts start as a Poisson process, last exponential spells and add
    log-normal heights; the grid covers (at least) an integral of ``total``."""
    step = BURSTY_STEP_S * rate
    mean_height = (1.0 - BURSTY_BASE) * BURSTY_EVERY_S / BURSTY_MEAN_S
    span = 1.5 * total + 10.0 * BURSTY_EVERY_S * rate
    while True:
        steps = int(span / step) + 1
        count = rng.poisson(span / (BURSTY_EVERY_S * rate))
        starts = np.sort(rng.uniform(0.0, span, size=count))
        ends = starts + rng.exponential(BURSTY_MEAN_S * rate, size=count)
        heights = mean_height * np.exp(0.5 * rng.standard_normal(count) - 0.125)
        delta = np.zeros(steps + 1)
        np.add.at(delta, np.minimum((starts / step).astype(np.int64), steps), heights)
        np.add.at(delta, np.minimum((ends / step).astype(np.int64), steps), -heights)
        levels = BURSTY_BASE + np.maximum(np.cumsum(delta[:-1]), 0.0)
        lengths = np.full(steps, step)
        if float(lengths @ levels) >= total:
            return lengths, levels
        span *= 2.0


def _arrival_times(
    rng: np.random.Generator, rows: int, rate: float, start_s: float, variant: str = "week"
) -> np.ndarray:
    """Sorted arrival times (float seconds) of ``rows`` requests from ``start_s`` on."""
    profile = _week_profile()
    # cumulative expected arrivals over one week, on the step grid (piecewise linear)
    cum = np.concatenate([[0.0], np.cumsum(profile * rate * _STEP_S)])
    grid = np.arange(len(cum)) * _STEP_S
    per_week = cum[-1]

    def cumulative(t: float) -> float:
        weeks, rem = divmod(t, WEEK_S)
        return float(weeks * per_week + np.interp(rem, grid, cum))

    target = cumulative(start_s) + _op_times(rng, rows, variant, rate)
    weeks, rem = np.divmod(target, per_week)
    return np.maximum(weeks * WEEK_S + np.interp(rem, cum, grid), start_s)


def _request_tokens(rng: np.random.Generator, gpt4: np.ndarray) -> np.ndarray:
    """Lomax (Pareto II) tokens: power-law tail, median about 300 (GPT-4 about 400)."""
    shape = 2.2
    scale = np.where(gpt4, 1050.0, 810.0)
    tokens = scale * (rng.uniform(size=len(gpt4)) ** (-1.0 / shape) - 1.0)
    cap = np.where(gpt4, 32_000, 16_000)
    return np.clip(np.rint(tokens), 1, cap).astype(np.int64)


def _response_tokens(rng: np.random.Generator, gpt4: np.ndarray) -> np.ndarray:
    """ChatGPT: two log-normal modes (short ~25, long ~300 tokens); GPT-4: one (~220)."""
    n = len(gpt4)
    short = rng.uniform(size=n) < 0.3
    median = np.where(gpt4, 220.0, np.where(short, 25.0, 300.0))
    sigma = np.where(gpt4, 0.7, 0.45)
    tokens = median * np.exp(sigma * rng.standard_normal(n))
    return np.clip(np.rint(tokens), 1, 4096).astype(np.int64)


def synthesize(
    rows: int,
    seed: int = 0,
    rate_scale: float = 1.0,
    start_s: float = 0.0,
    variant: str = "week",
) -> pd.DataFrame:
    """A BurstGPT_1-schema trace of ``rows`` requests; deterministic for a ``seed``.

    ``rate_scale`` multiplies the mean rate (0.27 requests/s); ``start_s`` is the time of
    the first possible arrival, in seconds from midnight of a Monday (the cycles are
    anchored there). Timestamps are whole seconds, non-decreasing, as in BurstGPT.
    ``variant`` (one of :data:`VARIANTS`) adds a fast-moving level to the weekly cycle:
    ``bursty`` on-off bursts of seconds to minutes, ``regimes`` rate shifts every
    few minutes, ``drift`` a rate that wanders within minutes; ``week`` adds nothing.
    Their time constants are seconds of wall time whatever ``rate_scale``.
    """
    if rows < 0:
        raise ConfigError(f"rows must be at least 0, got {rows}")
    if not rate_scale > 0 or not np.isfinite(rate_scale):
        raise ConfigError(f"rate scale must be a positive number, got {rate_scale}")
    if not start_s >= 0 or not np.isfinite(start_s):
        raise ConfigError(f"start time must be a non-negative number of seconds, got {start_s}")
    if variant not in VARIANTS:
        raise ConfigError(
            f"synthetic variant must be one of {', '.join(VARIANTS)}, not {variant!r}"
        )
    rng = np.random.default_rng(seed)
    times = _arrival_times(rng, rows, MEAN_RATE * rate_scale, start_s, variant)
    gpt4 = rng.uniform(size=rows) < GPT4_SHARE
    conversation = rng.uniform(size=rows) < CONVERSATION_SHARE
    request = _request_tokens(rng, gpt4)
    response = _response_tokens(rng, gpt4)
    failed = rng.uniform(size=rows) < FAILURE_SHARE
    response[failed] = 0
    request[failed & (rng.uniform(size=rows) < BOTH_ZERO_SHARE)] = 0
    return pd.DataFrame(
        {
            "Timestamp": np.floor(times).astype(np.int64),
            "Model": np.where(gpt4, "GPT-4", "ChatGPT"),
            "Request tokens": request,
            "Response tokens": response,
            "Total tokens": request + response,
            "Log Type": np.where(conversation, "Conversation log", "API log"),
        },
        columns=list(COLUMNS),
    )


def write_trace(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV, or as JSON lines when the suffix is ``.jsonl``/``.ndjson``."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".jsonl", ".ndjson"):
            df.to_json(out, orient="records", lines=True)
        else:
            df.to_csv(out, index=False)
    except OSError as exc:
        raise ConfigError(f"cannot write trace to {out}: {exc.strerror or exc}") from exc
    return out
