"""An LSTM forecaster: stacked LSTM over the window, a linear head on the last state.

>>> import torch
>>> m = LSTMNet(seq_len=8, horizon=2, channels=3, n_quantiles=3, hidden_size=16, num_layers=2)
>>> m(torch.zeros(4, 8, 3)).shape
torch.Size([4, 2, 3, 3])
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMNet(nn.Module):
    """``[B, L, C] -> [B, H, C, Q]`` (quantiles last, sorted)."""

    def __init__(
        self,
        seq_len: int,
        horizon: int,
        channels: int,
        n_quantiles: int = 3,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.seq_len, self.horizon, self.channels = seq_len, horizon, channels
        self.n_quantiles = n_quantiles
        self.lstm = nn.LSTM(
            input_size=channels,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(hidden_size, horizon * channels * n_quantiles)
        # the last input row is the strongest single predictor: give the head a skip path
        self.skip = nn.Linear(channels, horizon * channels * n_quantiles)
        self.head.is_output = True  # type: ignore[assignment]
        self.skip.is_output = True  # type: ignore[assignment]

    def quantile_biases(self) -> list[torch.Tensor]:
        """The bias of every output, quantiles on the last axis when viewed as ``[-1, Q]``."""
        return [self.head.bias]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # [B, L, hidden]
        y = self.head(out[:, -1, :]) + self.skip(x[:, -1, :])  # [B, H*C*Q]
        y = y.reshape(x.shape[0], self.horizon, self.channels, self.n_quantiles)  # [B, H, C, Q]
        return torch.sort(y, dim=-1).values
