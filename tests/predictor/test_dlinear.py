"""Inference fast paths (DLinear folded, the window median, float32 inputs) against training's."""

from __future__ import annotations

import pytest
import torch

from predictor.models.dlinear import DLinear


@pytest.mark.parametrize("individual", [False, True])
@pytest.mark.parametrize(("seq_len", "kernel"), [(16, 1), (16, 5), (64, 25), (8, 25)])
def test_folded_matrix_matches_the_decomposition(
    individual: bool, seq_len: int, kernel: int
) -> None:
    torch.manual_seed(seq_len + kernel)
    m = DLinear(
        seq_len, horizon=4, channels=3, n_quantiles=3, kernel_size=kernel, individual=individual
    )
    for p in m.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(9, seq_len, 3)
    reference = m(x)  # gradients on: the decomposition path
    with torch.no_grad():
        assert torch.allclose(m(x), reference, atol=1e-4)
        for p in m.parameters():  # new weights (as a refit or a loaded state does) refold
            p.mul_(-0.5)
    with torch.no_grad():
        folded = m(x)
    assert torch.allclose(folded, m(x.requires_grad_()), atol=1e-4)
    m.load_state_dict({k: torch.zeros_like(v) for k, v in m.state_dict().items()})
    with torch.no_grad():
        assert torch.count_nonzero(m(x)) == 0


@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_window_level_without_gradients_is_torchs_median(length: int) -> None:
    from predictor.models.neural import lower_median

    g = torch.Generator().manual_seed(length)
    x = torch.randint(0, 5, (40, length, 3), generator=g).float()  # many ties
    x[::2] = torch.randn(20, length, 3, generator=g)
    with torch.no_grad():
        fast = lower_median(x)
    assert torch.equal(fast, x.median(dim=1, keepdim=True).values)


def test_serving_inputs_are_the_training_transform_in_float32() -> None:
    import numpy as np

    from predictor.features import Scaler, to_log
    from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module

    rng = np.random.default_rng(5)
    windows = rng.exponential(300.0, size=(40, 16, 3))
    windows[0, 0] = [-2.0, 0.0, 1e6]  # negatives clip to 0 as in to_log
    scaler = Scaler.fit(to_log(windows[1:]))
    spec = NeuralSpec("dlinear", seq_len=16)
    fc = NeuralForecaster(spec, build_module(spec), scaler)
    served = fc._scaled(windows)
    assert served.dtype == np.float32
    np.testing.assert_allclose(served, scaler.transform(to_log(windows)), rtol=1e-5, atol=1e-5)
