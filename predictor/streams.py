"""Splitting a trace into streams: one sequence of requests per stream key.

The serving loop keeps one rolling window per stream key (the ``model`` field
by default, or one stream for everything with ``none``), so training builds its
windows the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from predictor.errors import ConfigError
from predictor.features import request_matrix

if TYPE_CHECKING:  # pandas is imported where a frame is split, so that the flags'
    import pandas as pd  # choices (STREAM_KEYS) cost no pandas import

STREAM_KEYS = ("model", "none")
ALL = "all"


def stream_names(df: pd.DataFrame, stream_key: str) -> pd.Series:
    """The stream each row of a loaded trace belongs to."""
    if stream_key not in STREAM_KEYS:
        raise ConfigError(
            f"unknown stream key {stream_key!r}; choose from {', '.join(STREAM_KEYS)}"
        )
    if stream_key == "model" and "model" in df.columns:
        return df["model"].where(df["model"].notna() & (df["model"] != ""), ALL).astype(str)
    import pandas as pd

    return pd.Series(ALL, index=df.index)


def load_series(
    df: pd.DataFrame, stream_key: str = "model", bin_s: float = 60.0, min_bins: int = 1
) -> dict[str, np.ndarray]:
    """Per-second load per time bin ``[B, 3]`` per stream; every stream spans the trace's time range."""
    from predictor.load import bin_load

    start, end = float(df["timestamp_s"].min()), float(df["timestamp_s"].max())
    out: dict[str, np.ndarray] = {}
    for name, part in df.groupby(stream_names(df, stream_key), sort=True):
        _, values = bin_load(
            part["timestamp_s"].to_numpy(),
            part["request_tokens"].to_numpy(),
            part["response_tokens"].to_numpy(),
            bin_s,
            start_s=start,
            end_s=end,
        )
        if len(values) >= min_bins:
            out[str(name)] = values
    return out


def stream_series(
    df: pd.DataFrame, stream_key: str = "model", min_rows: int = 1
) -> dict[str, np.ndarray]:
    """Raw per-request matrices ``[N, 3]`` (gap, request tokens, response tokens) per stream."""
    out: dict[str, np.ndarray] = {}
    for name, part in df.groupby(stream_names(df, stream_key), sort=True):
        if len(part) >= min_rows:
            out[str(name)] = request_matrix(
                part["timestamp_s"].to_numpy(),
                part["request_tokens"].to_numpy(),
                part["response_tokens"].to_numpy(),
            )
    return out
