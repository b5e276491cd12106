"""AutoETS from ``statsforecast`` as an optional load baseline (the ``stats`` extra, or ``ets``).

Exponential smoothing with the error, trend and season chosen by AICc. It is a
stronger reference than the flat baselines for smooth load series. Without
``statsforecast`` installed, :func:`available` is False and nothing here runs.

Refitting at every step of a walk-forward is slow, so :meth:`AutoETS.rolling_predict`
refits every ``refit_every`` forecast origins on the last ``seq_len`` values, and
in between runs the fitted model forward over the newest window (the state is
updated from the data, the parameters are kept). ``predict`` (the
:class:`~predictor.models.base.Forecaster` protocol) fits each window afresh.
Forecasts and 80 % bounds are clipped at 0 (loads are never negative). Where
a window cannot be fitted (a constant one, say), the forecast is its last value
with a zero-width interval, and ``failures`` counts it. The fitting and forecasting
are those of the statsforecast peers (:class:`predictor.models.sf.SfPeer`); the
``sf_autoets`` peer is this model on the peers' shorter window.
"""

from __future__ import annotations

from predictor.errors import ConfigError
from predictor.models.sf import SfPeer, available

__all__ = ["AutoETS", "available"]


class AutoETS(SfPeer):
    """A baseline per channel: AutoETS fitted on the last ``seq_len`` values."""

    kind = "baseline"

    def __init__(
        self,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 500,
        season_length: int = 1,
        refit_every: int = 50,
    ) -> None:
        if refit_every < 1 or seq_len < 2 or season_length < 1:
            raise ConfigError("AutoETS needs refit_every >= 1, seq_len >= 2, season_length >= 1")
        self.season_length = season_length
        self._setup(
            "auto_ets",
            "AutoETS",
            horizon,
            channels,
            seq_len,
            refit_every,
            {"season_length": season_length},
        )
