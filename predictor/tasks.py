"""The names of the two forecasting tasks, defined once.

A task names what is forecast: the next request of a stream (:data:`NEXT_REQUEST`) or
the load per time bin at several horizons (:data:`LOAD`). The same names mark forecast
messages (``kind``), artifacts (``task`` in their metadata), metrics labels and the
``--task`` flags.
"""

from __future__ import annotations

NEXT_REQUEST = "next_request"
LOAD = "load"
#: every task, the default first
TASKS = (NEXT_REQUEST, LOAD)
