"""A real Prometheus scrapes a running ``reqcast run`` and stores its series.

Starts Prometheus (scraping every second) and the embedded pipeline with tiny first
models, then asks the Prometheus HTTP API which ``reqcast_`` series it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_queries import alert_exprs, concrete, dashboard_exprs

PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed"),
]

DEADLINE_S = 120.0  # about 15 s on an idle machine; first training slows down under load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def query(base: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": promql} | ({} if at is None else {"time": f"{at:.3f}"})
    try:
        body = get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode(params))
    except urllib.error.HTTPError as e:  # 400 on a bad query, with the reason in the body
        pytest.fail(f"{promql!r}: {e.read().decode(errors='replace')}")
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(API base URL, the port it scrapes on 127.0.0.1), ready to answer."""
    target, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: reqcast\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.1)
        else:
            pytest.fail("prometheus did not become ready")
        yield base, target
    finally:
        stop(proc)
        log.close()


def test_prometheus_stores_reqcast_series(prometheus: tuple[str, int], tmp_path: Path) -> None:
    base, port = prometheus
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    run_log = (tmp_path / "run.log").open("wb")
    # the pipeline exits a few seconds after its replay; samples scraped until then stay
    # queryable through last_over_time, so the checks below work after it ended too
    flags = {
        "--events": "3000",
        "--rate": "500",
        "--metrics-port": str(port),
        "--model-dir": str(tmp_path / "models"),
        "--output": str(tmp_path / "f.jsonl"),
        "--status-interval": "0",
        "--first-epochs": "2",
        "--train-rows": "1500",
        "--seq-len": "16",
    }
    argv = [sys.executable, "-m", "stream.cli", "run"]
    argv += [token for pair in flags.items() for token in pair]
    argv.append("--no-load")  # next-request models only: a quicker first training
    run = subprocess.Popen(
        argv,
        stdout=run_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    wanted = {"reqcast_forecast_next_request", "reqcast_events_consumed_total"}
    names: set[str] = set()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            found = query(base, 'group by (__name__) ({__name__=~"reqcast_.+"})')
            names = {r["metric"]["__name__"] for r in found}
            if wanted <= names or run.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(2.5)  # two more scrapes, so rates have two samples to work with
        at = time.time()  # queries below are evaluated here, even if the run ended since
        forecasts = query(base, 'last_over_time(reqcast_forecast_next_request{bound="point"}[5m])')
        events = query(base, 'max_over_time(reqcast_events_consumed_total{status="valid"}[5m])')
        up = query(base, 'max_over_time(up{job="reqcast"}[5m])')
    finally:
        stop(run)
        run_log.close()
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert wanted <= names, f"stored {sorted(names)}; reqcast run said:\n{log[-3000:]}"
    assert up and float(up[0]["value"][1]) == 1.0
    models = {r["metric"]["model"] for r in forecasts}
    quantities = {r["metric"]["quantity"] for r in forecasts}
    assert {"lstm", "dlinear"} <= models  # and "best", unless --no-best
    assert {"gap_s", "request_tokens", "response_tokens"} <= quantities
    assert events and float(events[0]["value"][1]) > 0
    assert {"reqcast_model_version", "reqcast_event_to_forecast_latency_seconds_bucket"} <= names

    # every dashboard panel and alert rule evaluates on the stored series, and the panels
    # that a next-request-only run feeds show data
    values = {
        "stream": forecasts[0]["metric"]["stream"],
        "model": "lstm",
        "quantity": "gap_s",
        "load_quantity": "requests_per_s",
        "horizon": "6",
    }
    answered = {e: query(base, concrete(e, values), at) for e in dashboard_exprs()}
    for expr in alert_exprs():
        query(base, expr, at)
    with_data = {e for e, result in answered.items() if result}
    for needle in (
        'reqcast_forecast_next_request{stream="$stream", model="$model", quantity="$quantity", bound="point"}',
        "rate(reqcast_events_consumed_total[1m])",
        "histogram_quantile(0.99",
        "reqcast_model_version",
    ):
        assert any(needle in e for e in with_data), f"no data for the panel query with {needle}"
