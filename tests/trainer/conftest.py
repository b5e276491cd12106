"""Fixtures the refit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training and serving threads share two cores here; torch's spinning worker threads
    would only fight over them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())
