"""Synthetic BurstGPT-like traces, for demos, tests and benchmarks without the real files.

The shape follows the published BurstGPT figures (see ``shared/data/README.md``):
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


def _arrival_times(rng: np.random.Generator, rows: int, rate: float, start_s: float) -> np.ndarray:
    """Sorted arrival times (float seconds) of ``rows`` requests from ``start_s`` on."""
    profile = _week_profile()
    # cumulative expected arrivals over one week, on the step grid (piecewise linear)
    cum = np.concatenate([[0.0], np.cumsum(profile * rate * _STEP_S)])
    grid = np.arange(len(cum)) * _STEP_S
    per_week = cum[-1]

    def cumulative(t: float) -> float:
        weeks, rem = divmod(t, WEEK_S)
        return float(weeks * per_week + np.interp(rem, grid, cum))

    gaps = rng.gamma(BURST_SHAPE, 1.0 / BURST_SHAPE, size=rows)
    target = cumulative(start_s) + np.cumsum(gaps)
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
    rows: int, seed: int = 0, rate_scale: float = 1.0, start_s: float = 0.0
) -> pd.DataFrame:
    """A BurstGPT_1-schema trace of ``rows`` requests; deterministic for a ``seed``.

    ``rate_scale`` multiplies the mean rate (0.27 requests/s); ``start_s`` is the time of
    the first possible arrival, in seconds from midnight of a Monday (the cycles are
    anchored there). Timestamps are whole seconds, non-decreasing, as in BurstGPT.
    """
    if rows < 0:
        raise ConfigError(f"rows must be at least 0, got {rows}")
    if not rate_scale > 0 or not np.isfinite(rate_scale):
        raise ConfigError(f"rate scale must be a positive number, got {rate_scale}")
    if not start_s >= 0 or not np.isfinite(start_s):
        raise ConfigError(f"start time must be a non-negative number of seconds, got {start_s}")
    rng = np.random.default_rng(seed)
    times = _arrival_times(rng, rows, MEAN_RATE * rate_scale, start_s)
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
