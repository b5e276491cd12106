"""Forecasters: DLinear and LSTM networks, and the baselines they must beat."""

from __future__ import annotations

from predictor.models.base import (
    NOMINAL_COVERAGE,
    QUANTILES,
    Forecaster,
    Prediction,
    rolling_predict,
)
from predictor.models.baselines import (
    EWMA,
    LastValue,
    RollingMean,
    RollingMedian,
    default_baselines,
)
from predictor.models.neural import ARCHITECTURES, NeuralForecaster, NeuralSpec, build_module

__all__ = [
    "ARCHITECTURES",
    "EWMA",
    "NOMINAL_COVERAGE",
    "QUANTILES",
    "Forecaster",
    "LastValue",
    "NeuralForecaster",
    "NeuralSpec",
    "Prediction",
    "RollingMean",
    "RollingMedian",
    "build_module",
    "default_baselines",
    "rolling_predict",
]
