"""The PromQL in ``deploy/`` and the series reqcast exports, for the deploy tests.

Where the queries are (dashboard, alert rules, autoscaler), a small scanner that
lists the series and labels a query names (not a PromQL parser: promtool checks
the syntax), and every series :class:`stream.metrics.Metrics` exports.

>>> sorted(metric_names('sum by (status) (rate(reqcast_events_consumed_total{status="valid"}[5m]))'))
['reqcast_events_consumed_total']
>>> sorted(label_names('histogram_quantile(0.9, sum by (le) (rate(x_bucket{job=~"a.*"}[$__rate_interval])))'))
['job', 'le']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

from stream.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "reqcast.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
AUTOSCALER = DEPLOY / "k8s" / "autoscaler.yaml"

#: labels Prometheus adds to every scraped series, and the histogram bucket label
SCRAPE_LABELS = {"job", "instance", "le", "__name__"}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{?__\w+\}?")  # $__rate_interval, ${__range} ...
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
_KEYWORDS |= {"unless", "offset", "inf", "nan", "Inf", "NaN"}


def _strip(expr: str) -> str:
    expr = _GRAFANA_VAR.sub("5m", expr)
    expr = _STRING.sub('""', expr)
    return _RANGE.sub("", expr)


def label_names(expr: str) -> set[str]:
    """Labels named in matchers and in ``by``/``without``/``on``/``ignoring``/``group_*``."""
    expr = _strip(expr)
    names: set[str] = set()
    for group in _GROUPING.findall(expr):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    for block in _MATCHERS.findall(expr):
        names |= set(_MATCHER_LABEL.findall(block))
    return names


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions and keywords left out)."""
    expr = _GROUPING.sub(" ", _strip(expr))
    expr = _MATCHERS.sub(" ", expr)
    return {
        name
        for name, call in _IDENT.findall(expr)
        if not call and name not in _KEYWORDS and not re.fullmatch(r"\d\w*", name)
    }


def exported_series() -> dict[str, set[str]]:
    """Every series name :class:`stream.metrics.Metrics` exports, with its label names.

    Each metric gets one child with placeholder labels so that its samples, with the
    suffixes prometheus_client adds (``_total``, ``_bucket``, ``_info`` ...), show up.
    """
    metrics = Metrics(CollectorRegistry())
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labelnames = getattr(metric, "_labelnames", ())  # no public accessor
        child = metric.labels(*(f"v{i}" for i in range(len(labelnames)))) if labelnames else metric
        if isinstance(child, Counter):
            child.inc()
        elif isinstance(child, Gauge):
            child.set(1)
        elif isinstance(child, Histogram):
            child.observe(1)
        elif isinstance(child, Info):
            child.info({})
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for p in panels:
            yield from (t["expr"] for t in p.get("targets", []) if t.get("expr"))
            yield from walk(p.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def autoscaler_exprs() -> list[str]:
    return [
        t["metadata"]["query"]
        for doc in yaml.safe_load_all(AUTOSCALER.read_text())
        if doc and doc["kind"] == "ScaledObject"
        for t in doc["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]


def concrete(expr: str, values: dict[str, str] | None = None, interval: str = "1m") -> str:
    """``expr`` with Grafana's variables filled in: ``$__rate_interval`` and the like become
    ``interval``, dashboard variables their value in ``values`` (else ``x``).

    >>> concrete('rate(m{stream="$stream"}[$__rate_interval])', {"stream": "GPT-4"})
    'rate(m{stream="GPT-4"}[1m])'
    """
    values = values or {}
    expr = _GRAFANA_VAR.sub(interval, expr)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), "x"), expr)
