"""Features for next-request forecasting and the scaler that travels with a model.

A stream of requests becomes a matrix of raw per-request values ``[N, 3]``:
the gap since the previous request in seconds, request tokens and response
tokens (:data:`QUANTITIES`). Neural models see them as ``log1p`` and
standardised by a :class:`Scaler` fitted on the training split only.

>>> import numpy as np
>>> raw = request_matrix(np.array([5.0, 45.0, 45.0]), np.array([472, 1087, 3]), np.array([18, 230, 0]))
>>> raw.tolist()
[[0.0, 472.0, 18.0], [40.0, 1087.0, 230.0], [0.0, 3.0, 0.0]]
>>> x, y = make_windows(raw, seq_len=2)
>>> x.shape, y.shape
((1, 2, 3), (1, 3))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The per-request quantities every next-request forecaster predicts, in order.
QUANTITIES = ("gap_s", "request_tokens", "response_tokens")


def request_matrix(
    timestamps_s: np.ndarray, request_tokens: np.ndarray, response_tokens: np.ndarray
) -> np.ndarray:
    """Raw per-request values ``[N, 3]``: gap to the previous request (0 for the first), tokens."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    gaps = np.diff(ts, prepend=ts[:1]) if len(ts) else ts
    gaps = np.maximum(gaps, 0.0)
    return np.stack(
        [gaps, np.asarray(request_tokens, np.float64), np.asarray(response_tokens, np.float64)],
        axis=-1,
    ).reshape(len(ts), 3)


def to_log(raw: np.ndarray) -> np.ndarray:
    """``log1p`` of non-negative raw values (negative inputs are clipped to 0)."""
    return np.log1p(np.maximum(raw, 0.0))


def from_log(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_log`, clipped at 0."""
    return np.maximum(np.expm1(values), 0.0)


def make_windows(
    values: np.ndarray, seq_len: int, horizon: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Supervised pairs from a ``[N, C]`` series: inputs ``[M, L, C]`` and the next rows.

    With ``horizon == 1`` targets are ``[M, C]``, otherwise ``[M, H, C]``;
    ``M = N - L - H + 1``. Input ``i`` covers rows ``i .. i+L-1`` and its target
    starts at row ``i+L``: no target row is ever inside its input.
    """
    n = len(values)
    m = n - seq_len - horizon + 1
    if m <= 0:
        c = values.shape[1]
        empty_y = (0, c) if horizon == 1 else (0, horizon, c)
        return np.empty((0, seq_len, c)), np.empty(empty_y)
    # sliding_window_view over time: [N-L+1, C, L] -> [M, L, C]
    x = np.lib.stride_tricks.sliding_window_view(values, seq_len, axis=0)[:m]
    x = np.ascontiguousarray(x.transpose(0, 2, 1))
    if horizon == 1:
        y = values[seq_len : seq_len + m]
    else:
        yw = np.lib.stride_tricks.sliding_window_view(values[seq_len:], horizon, axis=0)[:m]
        y = np.ascontiguousarray(yw.transpose(0, 2, 1))  # [M, H, C]
    return x, np.ascontiguousarray(y)


def pad_window(window: np.ndarray, seq_len: int) -> tuple[np.ndarray, bool]:
    """Left-pad a short ``[n, C]`` window to ``[seq_len, C]`` by repeating its first row.

    Returns the window and whether it was already full ("warm"). An empty window
    becomes zeros. A window longer than ``seq_len`` keeps its last ``seq_len`` rows.
    """
    n = len(window)
    if n >= seq_len:
        return window[n - seq_len :], True
    if n == 0:
        return np.zeros((seq_len, window.shape[1])), False
    pad = np.repeat(window[:1], seq_len - n, axis=0)
    return np.concatenate([pad, window], axis=0), False


@dataclass(frozen=True)
class Scaler:
    """Per-channel standardisation, fitted on training data only and saved with the model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        """Fit on ``[..., C]`` values."""
        flat = values.reshape(-1, values.shape[-1])
        std = flat.std(axis=0)
        std = np.where(std < 1e-8, 1.0, std)
        return cls(tuple(float(v) for v in flat.mean(axis=0)), tuple(float(v) for v in std))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - np.asarray(self.mean)) / np.asarray(self.std)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * np.asarray(self.std) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))
