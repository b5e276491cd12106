"""The seed-compatible prediction API.

>>> from predictor.request_predictor import RequestPredictor  # doctest: +SKIP
>>> RequestPredictor(model_dir="models").predict_next_request(df)  # doctest: +SKIP
{'predictions': {'lstm': {'timestamp': ..., 'request_tokens': ..., ...}, 'dlinear': {...}}}

``df`` is a trace in the BurstGPT schema (``Timestamp``, ``Request tokens``,
``Response tokens``, optionally ``Model``) or with reqcast's canonical columns
(``timestamp``/``timestamp_s``, ``request_tokens``, ``response_tokens``). The
whole frame is one stream: filter it to one model first for per-model
forecasts, or pass ``stream=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from predictor.artifacts import load_latest
from predictor.errors import InputError, ModelLoadError, ReqcastError
from predictor.features import QUANTITIES, pad_window, request_matrix
from predictor.models.neural import ARCHITECTURES, NeuralForecaster

_ALIASES = {
    "timestamp_s": ("timestamp_s", "timestamp", "Timestamp"),
    "request_tokens": ("request_tokens", "Request tokens"),
    "response_tokens": ("response_tokens", "Response tokens"),
    "model": ("model", "Model"),
}


def _column(df: pd.DataFrame, name: str, required: bool = True) -> pd.Series | None:
    for alias in _ALIASES[name]:
        if alias in df.columns:
            return df[alias]
    if required:
        raise InputError(f"missing column {name!r} (accepted: {', '.join(_ALIASES[name])})")
    return None


def _timestamps(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(col, errors="raise")
    return (parsed - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy()


def _entry(
    fc: NeuralForecaster, meta: dict[str, Any], raw: np.ndarray, last_ts: float
) -> dict[str, Any]:
    window, warm = pad_window(raw, fc.seq_len)
    pred = fc.predict(window[None])
    point, lo, hi = pred.point[0, 0], pred.lower[0, 0], pred.upper[0, 0]  # [C]
    gap, req, resp = (float(v) for v in point)
    intervals = {q: [float(lo[i]), float(hi[i])] for i, q in enumerate(QUANTITIES)}
    intervals["timestamp"] = [last_ts + intervals["gap_s"][0], last_ts + intervals["gap_s"][1]]
    return {
        "timestamp": last_ts + gap,
        "gap_s": gap,
        "request_tokens": req,
        "response_tokens": resp,
        "interval": intervals,
        "nominal_coverage": 0.8,
        "confidence": fc.confidence,
        "warm": warm,
        "model_version": int(meta["version"]),
        "artifact": str(meta["name"]),
    }


class RequestPredictor:
    """Loads the newest artifact of each model from ``model_dir`` and forecasts the next request."""

    def __init__(
        self,
        model_dir: str | Path = "models",
        models: Sequence[str] = ARCHITECTURES,
        device: str = "cpu",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.models: dict[str, tuple[NeuralForecaster, dict[str, Any]] | str] = {}
        for name in models:
            try:
                self.models[name] = load_latest(self.model_dir, name, device=device)
            except ModelLoadError as exc:
                self.models[name] = str(exc)

    def predict_next_request(self, df: pd.DataFrame, stream: str | None = None) -> dict[str, Any]:
        """``{"predictions": {model: forecast or {"error": ...}}}`` for the request after ``df``."""
        if stream is not None:
            col = _column(df, "model", required=False)
            df = df[col == stream] if col is not None else df.iloc[0:0]
        if len(df) == 0:
            raise InputError("no rows to predict from")
        ts = _timestamps(_column(df, "timestamp_s"))  # type: ignore[arg-type]
        order = np.argsort(ts, kind="stable")
        raw = request_matrix(
            ts[order],
            _column(df, "request_tokens").to_numpy(np.float64)[order],  # type: ignore[union-attr]
            _column(df, "response_tokens").to_numpy(np.float64)[order],  # type: ignore[union-attr]
        )
        last_ts = float(ts[order][-1])
        out: dict[str, Any] = {}
        for name, loaded in self.models.items():
            if isinstance(loaded, str):
                out[name] = {"error": loaded}
                continue
            fc, meta = loaded
            try:
                out[name] = _entry(fc, meta, raw[-fc.seq_len :], last_ts)
            except (ReqcastError, ValueError, RuntimeError) as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return {"predictions": out, "last_timestamp": last_ts, "rows": len(df)}
