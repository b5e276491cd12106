"""Training presets, as in the scripts reqcast grew from.

========== ======= ====== ===== ============ ======== =================================
preset     seq_len epochs batch sample size  device   purpose
========== ======= ====== ===== ============ ======== =================================
simple     100     100    64    20,000 rows  auto     train both models, test prediction
production 100     100    64    whole trace  auto     full training, models saved
cpu        80      50     32    5,000 rows   cpu      small and quick on a laptop
========== ======= ====== ===== ============ ======== =================================

Every preset saves its models and ends with a test prediction; flags override
any field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from predictor.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    seq_len: int
    epochs: int
    batch_size: int
    sample_size: int | None
    device: str
    models: tuple[str, ...] = ("lstm", "dlinear")
    patience: int = 8

    def override(self, **changes: Any) -> Preset:
        """A copy with every change that is not ``None`` applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS = {
    "simple": Preset(
        "simple", seq_len=100, epochs=100, batch_size=64, sample_size=20_000, device="auto"
    ),
    "production": Preset(
        "production", seq_len=100, epochs=100, batch_size=64, sample_size=None, device="auto"
    ),
    "cpu": Preset("cpu", seq_len=80, epochs=50, batch_size=32, sample_size=5_000, device="cpu"),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
