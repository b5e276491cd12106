"""reqcast's pure core: events, traces, features, windows, forecasters and artifacts.

Nothing in this package talks to Kafka, Prometheus or the environment.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
