"""The training loop shared by offline training, the periodic trainer and benchmarks.

Input is one or more raw series ``[N, C]`` (one per stream). Each is split in
time: the first ``1 - val_fraction`` of rows train, the rest validate (their
windows may look back into the training rows, never forward). The scaler sees
training rows only. The loss is the pinball loss over the quantile heads;
training stops early when the validation loss has not improved for
``patience`` epochs, and the best weights are kept.

Intervals are then calibrated by split conformal prediction on the validation
windows: even-numbered windows fit the widening, odd-numbered ones measure the
coverage that becomes the model's ``confidence``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from predictor.errors import TrainingError
from predictor.features import Scaler, make_windows, to_log
from predictor.models.base import NOMINAL_COVERAGE, QUANTILES
from predictor.models.neural import (
    Ensemble,
    NeuralForecaster,
    NeuralSpec,
    build_member,
    default_params,
    ensemble_size,
)
from predictor.tasks import LOAD, NEXT_REQUEST
from trainer.device import resolve_device

#: architecture settings of load models: the level they start from (and forecast the
#: deviation from) is a learned mix, per quantity, of the medians and raw-value means of
#: the last 3, 6 and 30 bins (starting with half the weight on the 30-bin median), so the
#: training data decide how fast the level moves rather than one window fixed in advance
#: (docs/models.md)
LOAD_PARAMS: dict[str, Any] = {"level_windows": [3, 6, 30], "level_mean": "raw"}
#: per model, what its load networks add: DLinear's learning rate (a training setting,
#: recorded in the artifact with the rest). At the default 1e-3 its best epoch on
#: the benchmark week was the 1st to 3rd, one epoch overshooting the optimum; at 3e-4 it
#: is the 8th to 10th, and it forecasts load better (docs/benchmarks.md, "Accuracy: load")
LOAD_MODEL_PARAMS: dict[str, dict[str, Any]] = {"dlinear": {"learning_rate": 3e-4}}
#: the learning rate of a network without its own ``learning_rate`` setting
DEFAULT_LEARNING_RATE = 1e-3


def params_for_load(model: str, ensemble: int = 1) -> dict[str, Any]:
    """Settings of ``model``'s load networks, with ``ensemble`` networks per model."""
    return {
        **LOAD_PARAMS,
        **LOAD_MODEL_PARAMS.get(model, {}),
        **({"ensemble": ensemble} if ensemble > 1 else {}),
    }


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    model: str
    seq_len: int = 100
    horizon: int = 1
    epochs: int = 100
    batch_size: int = 64
    #: None: the network's own ``learning_rate`` setting if it has one (``params``), else
    #: :data:`DEFAULT_LEARNING_RATE`
    learning_rate: float | None = None
    weight_decay: float = 1e-2
    patience: int = 8
    val_fraction: float = 0.2
    device: str = "auto"
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: cap on training windows per epoch (the most recent ones), for bounded refits
    max_train_windows: int | None = None

    @classmethod
    def for_model(
        cls,
        model: str,
        *,
        task: str = NEXT_REQUEST,
        ensemble: int = 1,
        params: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> TrainConfig:
        """The one way to build a training config: ``model``'s settings for ``task``, then
        ``params`` over them, and the other fields from ``fields`` (the rest at their
        defaults).

        A load network takes :func:`params_for_load` (with ``ensemble`` networks); a
        next-request network adds nothing of its own.

        >>> TrainConfig.for_model("dlinear", task="load", seq_len=48).params["learning_rate"]
        0.0003
        >>> TrainConfig.for_model("lstm", params={"hidden": 8}).params
        {'hidden': 8}
        """
        if task == LOAD:
            own = params_for_load(model, ensemble)
        elif task == NEXT_REQUEST:
            if ensemble != 1:
                raise ValueError(f"ensembles are for load networks, got {ensemble} for {task}")
            own = {}
        else:
            raise ValueError(f"unknown task {task!r}")
        return cls(model=model, params={**own, **(params or {})}, **fields)


@dataclass
class TrainResult:
    """A trained forecaster and how its training went."""

    forecaster: NeuralForecaster
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    final_train_loss: float
    best_val_loss: float
    duration_s: float
    device: str
    n_train: int
    n_val: int
    val_metrics: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The short form benchmarks report per model."""
        return {
            "device": self.device,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "train_windows": self.n_train,
            "val_windows": self.n_val,
            "duration_s": round(self.duration_s, 2),
            "confidence": self.forecaster.confidence,
            # with an ensemble the epochs are its first network's
            **({"ensemble": n} if (n := ensemble_size(self.forecaster.spec)) > 1 else {}),
        }

    def metadata(self) -> dict[str, Any]:
        """The training part of the artifact metadata."""
        return {
            "training": {
                "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch,
                "final_train_loss": self.final_train_loss,
                "best_val_loss": self.best_val_loss,
                "duration_s": round(self.duration_s, 3),
                "device": self.device,
                "train_windows": self.n_train,
                "val_windows": self.n_val,
                "history": self.history,
            },
            "validation": self.val_metrics,
        }


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean quantile loss; ``pred [B, H, C, Q]``, ``target [B, H, C]``, ``quantiles [Q]``."""
    diff = target.unsqueeze(-1) - pred  # [B, H, C, Q]
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean()


def _split(
    series: Sequence[np.ndarray], cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Scaler]:
    """Scaled log-space windows for training and validation, and the scaler."""
    train_rows, parts = [], []
    for s in series:
        cut = int(len(s) * (1 - cfg.val_fraction))
        train_rows.append(s[:cut])
        parts.append((s[:cut], s[max(0, cut - cfg.seq_len) :]))
    if not train_rows or sum(len(r) for r in train_rows) == 0:
        raise TrainingError("no training rows")
    scaler = Scaler.fit(to_log(np.concatenate(train_rows)))

    def windows(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for r in rows:
            x, y = make_windows(scaler.transform(to_log(r)), cfg.seq_len, cfg.horizon)
            xs.append(x)
            ys.append(y.reshape(len(y), cfg.horizon, r.shape[-1]))  # [M, H, C], M may be 0
        c = series[0].shape[1]
        if not xs:
            return np.empty((0, cfg.seq_len, c)), np.empty((0, cfg.horizon, c))
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = windows([t for t, _ in parts])
    x_va, y_va = windows([v for _, v in parts])
    need = cfg.seq_len + cfg.horizon
    if len(x_tr) < 2 or len(x_va) < 2:
        total = sum(len(s) for s in series)
        raise TrainingError(
            f"too few rows to train: {total} rows give {len(x_tr)} training and {len(x_va)} "
            f"validation windows with seq_len={cfg.seq_len}; each stream needs well over "
            f"{math.ceil(need / cfg.val_fraction)} rows (use more data or a smaller --seq-len)"
        )
    if cfg.max_train_windows and len(x_tr) > cfg.max_train_windows:
        x_tr, y_tr = x_tr[-cfg.max_train_windows :], y_tr[-cfg.max_train_windows :]
    return x_tr, y_tr, x_va, y_va, scaler


def _evaluate(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, q: torch.Tensor, bs: int
) -> float:
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            total += float(pinball_loss(module(x[i : i + bs]), y[i : i + bs], q)) * len(
                x[i : i + bs]
            )
    return total / max(len(x), 1)


def _calibrate(
    fc: NeuralForecaster, x_va: np.ndarray, y_va: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray]:
    """Conformal widening ``[H, C]`` from even windows; coverage on odd windows -> confidence."""
    x_t = torch.from_numpy(x_va.astype(np.float32)).to(fc.device)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x_t), 4096):
            outs.append(fc.module(x_t[i : i + 4096]).float().cpu().numpy())
    q = np.concatenate(outs).astype(np.float64)  # [M, H, C, Q]
    lo, hi = q[..., 0], q[..., -1]
    score = np.maximum(lo - y_va, y_va - hi)  # [M, H, C]; > 0 means outside
    fit, check = score[0::2], score[1::2]
    level = min(1.0, math.ceil((len(fit) + 1) * NOMINAL_COVERAGE) / len(fit))
    widen = np.quantile(fit, level, axis=0)  # [H, C]
    covered = (check <= widen).mean(axis=0)  # [H, C]
    return widen, float(covered.mean()), covered


def train_forecaster(
    series: Sequence[np.ndarray], cfg: TrainConfig, progress: bool = True
) -> TrainResult:
    """Fit one network on raw series ``[N_i, C]`` and return it with its training report."""
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    x_tr, y_tr, x_va, y_va, scaler = _split(series, cfg)
    spec = NeuralSpec(
        cfg.model,
        cfg.seq_len,
        cfg.horizon,
        x_tr.shape[-1],
        QUANTILES,
        default_params(cfg.model, cfg.params),
    )
    q = torch.tensor(QUANTILES, device=device)
    xt = torch.from_numpy(x_tr.astype(np.float32)).to(device)
    yt = torch.from_numpy(y_tr.astype(np.float32)).to(device)
    xv = torch.from_numpy(x_va.astype(np.float32)).to(device)
    yv = torch.from_numpy(y_va.astype(np.float32)).to(device)
    n_members = ensemble_size(spec)
    fits = []
    for k in range(n_members):  # each member from its own seed, with its own early stopping
        torch.manual_seed(cfg.seed + k)
        member = build_member(spec, scaler).to(device)
        tag = cfg.model if n_members == 1 else f"{cfg.model} {k + 1}/{n_members}"
        rng = np.random.default_rng(cfg.seed + k)
        fits.append((member, _fit(member, xt, yt, xv, yv, q, cfg, rng, tag, progress)))
    module = fits[0][0] if n_members == 1 else Ensemble([m for m, _ in fits]).to(device)
    history, best_epoch, best_val = fits[0][1]
    if n_members > 1:
        best_val = _evaluate(module, xv, yv, q, 4096)
    fc = NeuralForecaster(spec, module, scaler, device=device)
    widen, confidence, covered = _calibrate(fc, x_va, y_va)
    fc.calibration, fc.confidence = widen, confidence
    val_metrics = _val_metrics(fc, x_va, y_va, covered)
    return TrainResult(
        forecaster=fc,
        history=history,
        epochs_run=len(history["train"]),
        best_epoch=best_epoch,
        final_train_loss=history["train"][-1],
        best_val_loss=best_val,
        duration_s=time.perf_counter() - started,
        device=device,
        n_train=len(x_tr),
        n_val=len(x_va),
        val_metrics=val_metrics,
    )


#: the level blend's weights (a few scalars every window shares, ``WindowNorm.mix``) learn
#: this many times faster than the network, without weight decay: at the network's rate
#: they move about 0.001 a step and hardly leave 0 in the few epochs a network trains
#: (DLinear's best epoch on the benchmark week is the first). 10 rather than 30: at 30
#: the week's load forecasts got worse (docs/benchmarks.md)
MIX_LR_FACTOR = 10.0


def learning_rate(cfg: TrainConfig) -> float:
    """``cfg``'s learning rate: its own, else its network's setting, else the default."""
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    return float(cfg.params.get("learning_rate", DEFAULT_LEARNING_RATE))


def _param_groups(module: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The network's parameters at :func:`learning_rate`; level blend weights (if any) at
    :data:`MIX_LR_FACTOR` times that, without weight decay."""
    lr = learning_rate(cfg)
    net: list[torch.nn.Parameter] = []
    mix: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        (mix if name.rsplit(".", 1)[-1] in ("mix", "level_logits") else net).append(p)
    groups: list[dict[str, Any]] = [{"params": net, "lr": lr}]
    if mix:
        groups.append({"params": mix, "lr": lr * MIX_LR_FACTOR, "weight_decay": 0.0})
    return groups


def _fit(
    module: torch.nn.Module,
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    q: torch.Tensor,
    cfg: TrainConfig,
    rng: np.random.Generator,
    tag: str,
    progress: bool,
) -> tuple[dict[str, list[float]], int, float]:
    """Train ``module`` in place until validation stops improving, keep its best weights;
    returns the loss history, the best epoch and its validation loss."""
    opt = torch.optim.AdamW(_param_groups(module, cfg), weight_decay=cfg.weight_decay)
    history: dict[str, list[float]] = {"train": [], "val": []}
    best_val, best_epoch, best_state, stale = math.inf, 0, copy.deepcopy(module.state_dict()), 0
    bar = tqdm(
        range(1, cfg.epochs + 1),
        desc=f"train {tag}",
        unit="epoch",
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        module.train()
        order = torch.from_numpy(rng.permutation(len(xt))).to(xt.device)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = pinball_loss(module(xt[idx]), yt[idx], q)
            if not torch.isfinite(loss):
                raise TrainingError(f"{tag}: loss became {float(loss)} at epoch {epoch}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
        train_loss = total / len(xt)
        val_loss = _evaluate(module, xv, yv, q, 4096)
        history["train"].append(round(train_loss, 6))
        history["val"].append(round(val_loss, 6))
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_val - 1e-5:
            best_val, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    module.load_state_dict(best_state)
    return history, best_epoch, best_val


def _val_metrics(
    fc: NeuralForecaster, x_va: np.ndarray, y_va: np.ndarray, covered: np.ndarray
) -> dict[str, Any]:
    """MAE in raw units per channel (first horizon step) and held-out coverage."""
    raw_x = np.expm1(fc.scaler.inverse(x_va))
    pred = fc.predict(raw_x)
    actual = np.expm1(fc.scaler.inverse(y_va))
    mae = np.abs(pred.point - actual).mean(axis=0)  # [H, C]
    return {
        "mae": mae[0].round(6).tolist(),
        "coverage_heldout": covered.mean(axis=0).round(4).tolist(),
        "confidence": round(fc.confidence or 0.0, 4),
    }
