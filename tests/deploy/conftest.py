"""Fixtures of the deploy tests."""

from __future__ import annotations

import pytest
from deploy_queries import exported_series


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Series name -> label names, of everything :class:`stream.metrics.Metrics` exports."""
    return exported_series()
