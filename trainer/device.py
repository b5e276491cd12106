"""Device choice: ``auto`` takes CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

import torch

from predictor.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str = "auto") -> str:
    """``auto|cpu|cuda`` (or ``cuda:N``) -> a torch device string that exists here."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu"
            )
        return requested
    raise ConfigError(f"unknown device {requested!r}; choose from {', '.join(DEVICES)}")


def is_cuda_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error, whichever way torch reported it."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)
