"""DLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023).

The series is split by a moving average into a trend and a remainder
("seasonal"); one linear map along time forecasts each part and the two are
summed. As in the reference, the moving average replicates the first and last
time step ``(k - 1) // 2`` times so the trend keeps the input length, and the
kernel must be odd. Heads are shared across channels unless ``individual``.

Here each head emits ``horizon * n_quantiles`` values per channel, so one model
gives the median and the interval bounds at once. Decomposition and heads are all
linear, so for inference (no gradient) they are folded into one matrix per head,
recomputed whenever the weights change.

>>> import torch
>>> m = DLinear(seq_len=8, horizon=2, channels=3, n_quantiles=3, kernel_size=5)
>>> m(torch.zeros(4, 8, 3)).shape
torch.Size([4, 2, 3, 3])
"""

from __future__ import annotations

import torch
from torch import nn


class MovingAverage(nn.Module):
    """Moving average along time with edge replication; ``[B, L, C] -> [B, L, C]``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"DLinear needs an odd moving-average kernel, got {kernel_size}")
        self.kernel_size = kernel_size
        self.pool = nn.AvgPool1d(kernel_size=kernel_size, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.kernel_size - 1) // 2
        front = x[:, :1, :].repeat(1, half, 1)
        back = x[:, -1:, :].repeat(1, half, 1)
        padded = torch.cat([front, x, back], dim=1)  # [B, L + k - 1, C]
        return self.pool(padded.permute(0, 2, 1)).permute(0, 2, 1)  # [B, L, C]


class SeriesDecomposition(nn.Module):
    """``x -> (x - trend, trend)`` with the trend from :class:`MovingAverage`."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_avg = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_avg(x)
        return x - trend, trend


class DLinear(nn.Module):
    """Decomposition + linear heads; ``[B, L, C] -> [B, H, C, Q]`` (quantiles last, sorted)."""

    def __init__(
        self,
        seq_len: int,
        horizon: int,
        channels: int,
        n_quantiles: int = 3,
        kernel_size: int = 25,
        individual: bool = False,
    ) -> None:
        super().__init__()
        self.seq_len, self.horizon, self.channels = seq_len, horizon, channels
        self.n_quantiles = n_quantiles
        self.individual = individual
        # the kernel cannot be wider than the window; keep it odd
        k = min(kernel_size, seq_len if seq_len % 2 == 1 else seq_len - 1)
        self.decomposition = SeriesDecomposition(max(k, 1))
        out = horizon * n_quantiles
        n_heads = channels if individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(seq_len, out) for _ in range(n_heads))
        self.trend = nn.ModuleList(nn.Linear(seq_len, out) for _ in range(n_heads))
        for head in [*self.seasonal, *self.trend]:
            head.is_output = True
        self._folded: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def quantile_biases(self) -> list[torch.Tensor]:
        """The bias of every output, quantiles on the last axis when viewed as ``[-1, Q]``
        (one per head: the trend heads', which every output sums with a seasonal one)."""
        return [head.bias for head in self.trend if isinstance(head, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            y = self._decomposed(x)
        else:
            weight, bias = self._fold()  # [n_heads, H*Q, L], [n_heads, H*Q]
            xc = x.permute(0, 2, 1)  # [B, C, L]
            if self.individual:
                y = torch.einsum("bcl,col->bco", xc, weight) + bias
            else:
                y = xc @ weight[0].T + bias[0]  # [B, C, H*Q]
        y = y.reshape(x.shape[0], self.channels, self.horizon, self.n_quantiles)
        y = y.permute(0, 2, 1, 3)  # [B, H, C, Q]
        return torch.sort(y, dim=-1).values

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head, the one matrix and bias the decomposition and both heads amount to."""
        params = [*self.seasonal.parameters(), *self.trend.parameters()]
        key = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
        if self._folded is None or self._folded[0] != key:
            first = params[0]
            eye = torch.eye(self.seq_len, dtype=first.dtype, device=first.device)
            # the moving average of unit impulses: trend = x @ avg (time on the last axis)
            avg = self.decomposition.moving_avg(eye.unsqueeze(-1))[..., 0]  # [L, L]
            weights, biases = [], []
            for s, t in zip(self.seasonal, self.trend, strict=True):
                assert isinstance(s, nn.Linear) and isinstance(t, nn.Linear)
                weights.append(s.weight @ (eye - avg.T) + t.weight @ avg.T)
                biases.append(s.bias + t.bias)
            self._folded = (key, torch.stack(weights), torch.stack(biases))
        return self._folded[1], self._folded[2]

    def _decomposed(self, x: torch.Tensor) -> torch.Tensor:
        """The reference computation, ``[B, C, H*Q]`` (used while training)."""
        seasonal, trend = self.decomposition(x)  # [B, L, C] each
        seasonal, trend = seasonal.permute(0, 2, 1), trend.permute(0, 2, 1)  # [B, C, L]
        if self.individual:
            parts = [
                self.seasonal[c](seasonal[:, c, :]) + self.trend[c](trend[:, c, :])
                for c in range(self.channels)
            ]
            y = torch.stack(parts, dim=1)  # [B, C, H*Q]
        else:
            y = self.seasonal[0](seasonal) + self.trend[0](trend)  # [B, C, H*Q]
        return y
