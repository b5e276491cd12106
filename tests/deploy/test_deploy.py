"""Prometheus rules, the Grafana dashboard and the image under ``deploy/``.

promtool checks the Prometheus config, the alert rules and their unit tests, and
parses every dashboard and autoscaler query; every query names only series and
labels that :class:`stream.metrics.Metrics` exports; the Dockerfile copies the
packages and runs ``reqcast`` as a non-root user. Compose and Kubernetes are
checked in ``test_deploy_compose.py`` and ``test_deploy_k8s.py``.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_cli import DEPLOY, ROOT, load_yaml
from deploy_queries import (
    DASHBOARD,
    SCRAPE_LABELS,
    alert_exprs,
    autoscaler_exprs,
    concrete,
    dashboard_exprs,
    label_names,
    metric_names,
)

PROMETHEUS = DEPLOY / "prometheus"
#: series Prometheus itself makes; alert rules may use them
PROMETHEUS_SERIES = {"up"}


QUERY_SOURCES = {
    "dashboard": dashboard_exprs,
    "alerts": alert_exprs,
    "autoscaler": autoscaler_exprs,
}


@pytest.mark.parametrize("source", list(QUERY_SOURCES))
def test_queries_use_only_exported_series_and_labels(
    source: str, exported: dict[str, set[str]]
) -> None:
    exprs = QUERY_SOURCES[source]()
    assert exprs, f"no queries found in the {source}"
    allowed = set(exported) | (PROMETHEUS_SERIES if source == "alerts" else set())
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"{source}: no series in {expr!r}"
        assert names <= allowed, f"{source}: not exported: {names - allowed} in {expr!r}"
        labels = set().union(*(exported.get(n, set()) for n in names)) | SCRAPE_LABELS
        used = label_names(expr)
        assert used <= labels, f"{source}: unknown labels {used - labels} in {expr!r}"


def test_dashboard_shows_what_operators_need() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    needed = {
        "reqcast_forecast_load",
        "reqcast_actual_load",
        "reqcast_forecast_next_request",
        "reqcast_online_mae",
        "reqcast_online_interval_coverage",
        "reqcast_consumer_lag_records",
        "reqcast_events_consumed_total",
        "reqcast_invalid_events_total",
        "reqcast_model_version",
        "reqcast_model_swaps_total",
        "reqcast_training_duration_seconds_sum",
        "reqcast_event_to_forecast_latency_seconds_bucket",
    }
    assert needed <= used, f"dashboard lacks {needed - used}"
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    bounds = {b for e in dashboard_exprs() for b in re.findall(r'bound="(\w+)"', e)}
    assert bounds == {"point", "lower", "upper"}


def test_dashboard_variables_use_exported_labels(exported: dict[str, set[str]]) -> None:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    queries = [v["query"]["query"] for v in variables if v["type"] == "query"]
    assert queries
    for q in queries:
        m = re.fullmatch(r"label_values\((\w+)(\{.*\})?,\s*(\w+)\)", q)
        assert m, f"unexpected variable query {q!r}"
        assert m.group(3) in exported[m.group(1)], q
        assert label_names(m.group(1) + (m.group(2) or "")) <= exported[m.group(1)]


def test_alert_rules_cover_the_operational_failures() -> None:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    names = {r["alert"] for g in groups for r in g["rules"]}
    assert {
        "ReqcastForecastsStale",
        "ReqcastConsumerLagGrowing",
        "ReqcastCoverageCollapsed",
        "ReqcastModelSwapsRejected",
        "ReqcastDeadLetterRateHigh",
    } <= names


# -- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def run_promtool(promtool: str, *args: str | Path) -> str:
    proc = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_check_config(promtool: str) -> None:
    # rule_files are resolved relative to the config file, as inside the container
    out = run_promtool(promtool, "check", "config", PROMETHEUS / "prometheus.yml")
    assert "1 rule files found" in out


def test_promtool_check_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", PROMETHEUS / "alerts.yml")


def test_promtool_alert_unit_tests(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", PROMETHEUS / "alerts_test.yml")


def test_dashboard_and_autoscaler_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana variables filled in)."""
    exprs = dashboard_exprs() + autoscaler_exprs()
    rules = [{"record": f"reqcast:query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    out = run_promtool(promtool, "check", "rules", path)
    assert f"{len(rules)} rules found" in out


# -- image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_copies_the_packages_and_runs_reqcast_as_non_root() -> None:
    tomllib = pytest.importorskip("tomllib")
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = found["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    }
    instructions = dockerfile_instructions()
    copied = set()
    for op, rest in instructions:
        if op == "COPY":
            for source in shlex.split(rest)[:-1]:
                matches = glob.glob(str(ROOT / source))
                assert matches or any(c in source for c in "*?["), (
                    f"COPY {source}: not in the repository"
                )
                copied |= {Path(m).name for m in matches}
    assert packages <= copied and "pyproject.toml" in copied
    ops = dict(instructions)
    assert json.loads(ops["ENTRYPOINT"]) == ["reqcast"]
    assert "9464" in ops["EXPOSE"].split()
    assert ops["USER"] not in ("root", "0")
    args = [rest.split("=")[0] for op, rest in instructions if op == "ARG"]
    assert {"TORCH_SPEC", "TORCH_INDEX_URL", "BASE_IMAGE"} <= set(args)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{p}/" for p in packages} | {"!pyproject.toml"} <= set(ignore)
