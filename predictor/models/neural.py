"""Trained networks behind the :class:`~predictor.models.base.Forecaster` interface.

A :class:`NeuralForecaster` owns a torch module (DLinear or LSTM), the scaler
fitted on its training split, and its interval calibration. Inputs are raw
windows; the module sees ``log1p`` values standardised by the scaler and emits
quantiles in that space, which are mapped back to raw units.

Interval calibration (split conformal, CQR): after training, the distance by
which validation outcomes fall outside the raw quantile band is measured per
horizon and quantity; the band is widened (or narrowed) by the 80th percentile
of that score so that about 80 % of held-out outcomes fall inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from predictor.errors import ConfigError
from predictor.features import Scaler, from_log
from predictor.models.base import QUANTILES, Prediction
from predictor.models.dlinear import DLinear
from predictor.models.lstm import LSTMNet

ARCHITECTURES = ("lstm", "dlinear")


#: architecture settings of newly trained networks (each artifact records its own). The
#: LSTM is small on purpose: it forecasts every event while serving, and one layer of 32
#: costs about an eighth of two layers of 64 per window (``reqcast bench stream``)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "lstm": {"hidden_size": 32, "num_layers": 1, "dropout": 0.1, "norm": "median"},
    "dlinear": {"kernel_size": 25, "individual": False, "norm": "median"},
}
#: what a spec without a setting means: the settings of artifacts written before every
#: artifact recorded its own
_IMPLIED_PARAMS: dict[str, dict[str, Any]] = {
    "lstm": {"hidden_size": 64, "num_layers": 2, "dropout": 0.1},
    "dlinear": {"kernel_size": 25, "individual": False},
}


def default_params(arch: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings a new ``arch`` network is trained with, ``overrides`` applied."""
    return {**DEFAULT_PARAMS.get(arch, {}), **(overrides or {})}


@dataclass(frozen=True)
class NeuralSpec:
    """Everything needed to rebuild a network before its weights are loaded."""

    arch: str
    seq_len: int
    horizon: int = 1
    channels: int = 3
    quantiles: tuple[float, ...] = QUANTILES
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "seq_len": self.seq_len,
            "horizon": self.horizon,
            "channels": self.channels,
            "quantiles": list(self.quantiles),
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuralSpec:
        return cls(
            arch=str(data["arch"]),
            seq_len=int(data["seq_len"]),
            horizon=int(data["horizon"]),
            channels=int(data["channels"]),
            quantiles=tuple(float(q) for q in data["quantiles"]),
            params=dict(data.get("params", {})),
        )


class WindowNorm(nn.Module):
    """Per-window level normalisation around a network: ``[B, L, C] -> [B, H, C, Q]``.

    The window's level (its median, or mean, per channel over time) is
    subtracted before the network and added back to every output, so the
    network forecasts the deviation from the recent level. With ``median`` in
    log space that level is exactly the rolling-median forecast, which the
    network then has to improve on. ``none`` passes the window through. With
    ``level_len`` the level is taken over the window's last ``level_len`` steps only.

    The output layers start at zero weights, and their biases at ``offsets`` per
    quantile (0 for the median), so an untrained network forecasts the level with
    an interval around it. Were every quantile to start equal, which output is the
    median would be decided by the sort of the outputs, input by input: the heads
    of a horizon then swap roles during training and untangle slowly (DLinear's
    did not within 40 epochs at some horizons).

    With ``mix_channels`` the median level is blended per channel towards the
    window mean by a learned weight (``mix``, starting at 0: the median; it is not
    bounded, so it may also carry the level past the mean or away from it): which
    level forecasts load better depends on the quantity and the traffic, and
    training sets the weights. That mean is the mean of the scaled log values
    unless ``raw_scale`` (the scaler's per-channel ``(mean, std)`` of ``log1p``
    values) is given: then it is the mean of the raw values, mapped into the
    network's space, so that at ``mix == 1`` an untrained network forecasts exactly
    the moving-mean baseline (the log-space mean sits below it, by more the more
    skewed the quantity is, and the level blend could reach neither baseline).

    With ``level_windows`` the level is instead a learned convex mix, per channel, of
    several candidate levels: the median and the mean (raw-value mean with
    ``raw_scale``) over each window's last steps. The mix starts uniform, so an
    untrained network forecasts the average of those moving medians and means, and
    training moves the weight to the windows that forecast this traffic best: no one
    level window is fixed in advance (a 30-bin level lags traffic whose level moves
    within a few bins; a 3-bin level is noisy on steady traffic).
    """

    log_mean: torch.Tensor  # buffers of a raw-value mean
    log_std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        mode: str = "median",
        level_len: int | None = None,
        offsets: torch.Tensor | None = None,
        mix_channels: int | None = None,
        raw_scale: tuple[Sequence[float], Sequence[float]] | None = None,
        level_windows: Sequence[int] | None = None,
        channels: int = 1,
    ) -> None:
        super().__init__()
        if mode not in ("median", "mean", "none"):
            raise ConfigError(f"unknown window normalisation {mode!r}")
        if level_len is not None and level_len < 1:
            raise ConfigError(f"level_len must be at least 1, got {level_len}")
        if mix_channels is not None and mode != "median":
            raise ConfigError(f"a level mix blends the median with the mean, not {mode!r}")
        self.net, self.mode, self.level_len = net, mode, level_len
        self.mix = None if mix_channels is None else nn.Parameter(torch.zeros(mix_channels))
        self.windows = tuple(int(w) for w in level_windows or ())
        self.level_logits = None
        if self.windows:
            if mode != "median" or mix_channels is not None or level_len is not None:
                raise ConfigError("level_windows replaces level_len and level_mix (median norm)")
            if min(self.windows) < 1:
                raise ConfigError(f"level windows must be at least 1, got {self.windows}")
            # start with half the weight on the longest window's median, the steadiest
            # candidate, the rest spread evenly over the others
            k = 2 * len(self.windows)
            logits = torch.zeros(channels, k)
            logits[:, 2 * self.windows.index(max(self.windows))] = math.log(k - 1)
            self.level_logits = nn.Parameter(logits)
        self.raw_mean = raw_scale is not None
        if raw_scale is not None:
            if mix_channels is None and not self.windows:
                raise ConfigError("a raw-value mean only serves the level mix (level_mix)")
            # the scaler's, saved with the weights too: a reader that does not know this
            # level then fails on the unexpected keys instead of using the log-space mean
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in raw_scale)
            self.register_buffer("log_mean", mean)
            self.register_buffer("log_std", std)
        if mode != "none":
            # start from "the forecast is the recent level": output layers begin at zero
            for layer in net.modules():
                if isinstance(layer, nn.Linear) and getattr(layer, "is_output", False):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
            if offsets is not None:
                with torch.no_grad():
                    for bias in _quantile_biases(net):
                        bias.view(-1, len(offsets)).add_(offsets.to(bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return self.net(x)
        if self.level_logits is not None:
            level = self._window_level(x)
            return self.net(x - level) + level.unsqueeze(-1)
        recent = x if self.level_len is None else x[:, -self.level_len :, :]
        median = self.mode == "median"
        level = lower_median(recent) if median else recent.mean(dim=1, keepdim=True)  # [B, 1, C]
        if self.mix is not None:
            level = level + self.mix * (self._mean(recent) - level)
        out = self.net(x - level)  # [B, H, C, Q]
        return out + level.unsqueeze(-1)  # [B, 1, C, 1] broadcasts over H and Q

    def _window_level(self, x: torch.Tensor) -> torch.Tensor:
        """The learned mix of each window's median and mean, ``[B, 1, C]``."""
        assert self.level_logits is not None
        cands = []
        for w in self.windows:
            recent = x[:, -w:, :]
            cands += [lower_median(recent), self._mean(recent)]
        stacked = torch.stack(cands, dim=-1)  # [B, 1, C, K]
        weights = torch.softmax(self.level_logits, dim=-1)  # [C or 1, K]
        return (stacked * weights).sum(dim=-1)

    def _mean(self, recent: torch.Tensor) -> torch.Tensor:
        """The window's mean level, ``[B, 1, C]``: of the scaled log values, or with
        ``raw_scale`` of the raw values (``log1p(mean(expm1(v))) = log(mean(exp(v)))``
        in log space, taken through ``logsumexp`` so no raw value overflows)."""
        if not self.raw_mean:
            return recent.mean(dim=1, keepdim=True)
        logs = (recent * self.log_std + self.log_mean).clamp_min(0.0)  # log1p of raw >= 0
        mean_log = torch.logsumexp(logs, dim=1, keepdim=True) - math.log(recent.shape[1])
        return (mean_log - self.log_mean) / self.log_std


def _quantile_biases(net: nn.Module) -> list[torch.Tensor]:
    if not isinstance(net, DLinear | LSTMNet):
        raise ConfigError(f"no quantile outputs known for {type(net).__name__}")
    return net.quantile_biases()


def lower_median(x: torch.Tensor) -> torch.Tensor:
    """``x.median(dim=1, keepdim=True).values`` (the lower middle value for an even count);
    on the CPU without gradients through one partial sort in numpy, several times faster.

    >>> t = torch.tensor([[[4.0], [1.0], [3.0], [2.0]]])
    >>> lower_median(t).flatten().tolist(), torch.no_grad()(lower_median)(t).flatten().tolist()
    ([2.0], [2.0])
    """
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return x.median(dim=1, keepdim=True).values
    k = (x.shape[1] - 1) // 2
    return torch.from_numpy(np.partition(x.numpy(), k, axis=1)[:, k : k + 1])


class Ensemble(nn.Module):
    """Several networks of one spec, trained from different seeds; ``[B, L, C] -> [B, H, C, Q]``
    is the mean of their quantiles (each member's are sorted, so the mean's are too)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError("an ensemble needs at least two networks")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def ensemble_size(spec: NeuralSpec) -> int:
    """Networks in ``spec``'s module (the ``ensemble`` setting; 1 without it)."""
    n = int(spec.params.get("ensemble", 1))
    if n < 1:
        raise ConfigError(f"ensemble must be at least 1, got {n}")
    return n


def build_module(spec: NeuralSpec, scaler: Scaler | None = None) -> nn.Module:
    """A freshly initialised network for ``spec`` (seed torch first for repeatability); an
    :class:`Ensemble` of freshly initialised ones when its ``ensemble`` setting is above 1.
    ``scaler`` is the one the network's inputs are scaled with (needed by a raw-value
    ``level_mean``)."""
    n = ensemble_size(spec)
    if n == 1:
        return build_member(spec, scaler)
    return Ensemble([build_member(spec, scaler) for _ in range(n)])


#: how a level mix takes the window mean: ``log`` of the scaled log values (what an
#: artifact without the setting means) or ``raw`` of the raw values
LEVEL_MEANS = ("log", "raw")


def build_member(spec: NeuralSpec, scaler: Scaler | None = None) -> nn.Module:
    """One network of ``spec``, its window normalisation around it."""
    level_len = spec.params.get("level_len")
    windows = spec.params.get("level_windows")
    level_mean = str(spec.params.get("level_mean", "log"))
    if level_mean not in LEVEL_MEANS:
        raise ConfigError(f"unknown level_mean {level_mean!r}; choose from {LEVEL_MEANS}")
    raw_scale = None
    if level_mean == "raw":
        if scaler is None:
            raise ConfigError("a raw-value level_mean needs the scaler of the network's inputs")
        raw_scale = (scaler.mean, scaler.std)
    return WindowNorm(
        _build_net(spec),
        str(spec.params.get("norm", "median")),
        None if level_len is None else int(level_len),
        initial_offsets(spec.quantiles),
        spec.channels if spec.params.get("level_mix") else None,
        raw_scale,
        None if windows is None else [int(w) for w in windows],
        spec.channels,
    )


#: spread of the initial interval: the data are standardised, so the first 80 % interval
#: of an untrained network spans about 1.3 of their standard deviations around the level
INITIAL_SPREAD = 0.5


def initial_offsets(quantiles: tuple[float, ...]) -> torch.Tensor:
    """Where each quantile output starts relative to the level: normal quantiles at
    :data:`INITIAL_SPREAD` (0 for the median, so the first forecast is the level).

    >>> [round(v, 3) for v in initial_offsets((0.1, 0.5, 0.9)).tolist()]
    [-0.641, 0.0, 0.641]
    """
    q = torch.tensor(quantiles, dtype=torch.float64)
    return (torch.distributions.Normal(0.0, 1.0).icdf(q) * INITIAL_SPREAD).float()


def _param(spec: NeuralSpec, name: str) -> Any:
    return spec.params.get(name, _IMPLIED_PARAMS[spec.arch][name])


def parameter_count(spec: NeuralSpec) -> int:
    """Values in the state dict of :func:`build_module`'s network for ``spec`` (parameters and
    buffers), computed from the spec alone: what loading it would allocate, known before
    anything is built (a spec from a file or a message must not decide memory unchecked)."""
    h, c, q = spec.horizon, spec.channels, len(spec.quantiles)
    if spec.arch == "dlinear":
        out = h * q
        heads = c if bool(_param(spec, "individual")) else 1
        net = heads * 2 * (spec.seq_len * out + out)  # a seasonal and a trend head each
    elif spec.arch == "lstm":
        hidden, layers = int(_param(spec, "hidden_size")), int(_param(spec, "num_layers"))
        out = h * c * q
        # per layer: input and hidden weights of the four gates, and two biases
        lstm = 4 * hidden * (c + hidden + 2) + (layers - 1) * 4 * hidden * (2 * hidden + 2)
        net = lstm + (hidden + 1) * out + (c + 1) * out  # the head and the skip path
    else:
        raise ConfigError(f"unknown model {spec.arch!r}; choose from {', '.join(ARCHITECTURES)}")
    windows = spec.params.get("level_windows") or []
    mix = c if spec.params.get("level_mix") else c * 2 * len(windows)
    raw = 2 * c if mix and str(spec.params.get("level_mean", "log")) == "raw" else 0
    return ensemble_size(spec) * (net + mix + raw)


def _build_net(spec: NeuralSpec) -> nn.Module:
    q = len(spec.quantiles)
    if spec.arch == "dlinear":
        return DLinear(
            spec.seq_len,
            spec.horizon,
            spec.channels,
            n_quantiles=q,
            kernel_size=int(_param(spec, "kernel_size")),
            individual=bool(_param(spec, "individual")),
        )
    if spec.arch == "lstm":
        return LSTMNet(
            spec.seq_len,
            spec.horizon,
            spec.channels,
            n_quantiles=q,
            hidden_size=int(_param(spec, "hidden_size")),
            num_layers=int(_param(spec, "num_layers")),
            dropout=float(_param(spec, "dropout")),
        )
    raise ConfigError(f"unknown model {spec.arch!r}; choose from {', '.join(ARCHITECTURES)}")


class NeuralForecaster:
    """A trained network plus its scaler and calibration, forecasting from raw windows."""

    kind = "model"

    def __init__(
        self,
        spec: NeuralSpec,
        module: nn.Module,
        scaler: Scaler,
        calibration: np.ndarray | None = None,
        confidence: float | None = None,
        device: str = "cpu",
    ) -> None:
        self.spec = spec
        self.name = spec.arch
        self.seq_len, self.horizon, self.channels = spec.seq_len, spec.horizon, spec.channels
        self.scaler = scaler
        self._scale: tuple[np.ndarray, np.ndarray] | None = None  # float32 mean, 1/std
        self.calibration = (
            np.zeros((spec.horizon, spec.channels)) if calibration is None else calibration
        )
        #: fraction of held-out outcomes inside the interval (docs/models.md, "Confidence")
        self.confidence = confidence
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def raw_quantiles(self, windows: np.ndarray) -> np.ndarray:
        """Uncalibrated quantiles in scaled log space, ``[B, H, C, Q]``."""
        x = self._scaled(windows)  # [B, L, C]
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy().astype(np.float64)

    def _scaled(self, windows: np.ndarray) -> np.ndarray:
        """``scaler.transform(to_log(windows))`` in float32, the networks' precision, in
        place in one buffer (a third of the float64 path's time when serving)."""
        if self._scale is None:
            mean = np.asarray(self.scaler.mean, dtype=np.float32)
            self._scale = (mean, (1.0 / np.asarray(self.scaler.std)).astype(np.float32))
        mean, inv_std = self._scale
        x = np.maximum(windows, 0.0, dtype=np.float32)
        np.log1p(x, out=x)
        x -= mean
        x *= inv_std
        return x

    def predict(self, windows: np.ndarray) -> Prediction:
        q = self.raw_quantiles(windows)  # [B, H, C, Q]
        mid = len(self.spec.quantiles) // 2
        lo = q[..., 0] - self.calibration
        hi = q[..., -1] + self.calibration
        point = q[..., mid]
        lo, hi = np.minimum(lo, point), np.maximum(hi, point)

        def back(v: np.ndarray) -> np.ndarray:
            return from_log(self.scaler.inverse(v))

        return Prediction(back(point), back(lo), back(hi))

    def to(self, device: str) -> NeuralForecaster:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self
