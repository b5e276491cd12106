"""``bench accuracy --task load --suite``: the load walk-forward over every dev trace.

The traces (:func:`suite_traces`):

- ``azure_code``: the Azure 2023 code-completion trace (57 minutes) at 10 s bins;
- ``burstgpt_1``, ``burstgpt_3``: the 400-row BurstGPT slices (about 10 and 11.5
  hours, under one request a minute) at 60 s bins, when a slice is long enough;
- ``synth_week``: ``reqcast synth``'s default trace (100,000 rows, variant ``week``)
  at 60 s bins;
- ``synth_bursty``, ``synth_regimes``, ``synth_drift``: the fast-moving variants of
  :mod:`predictor.synth` (80,000 rows at 10x the mean rate, about 8 hours) at 10 s
  bins, where their minute-scale structure is visible.

Each runs :func:`trainer.evaluation.load.load_backtest` at horizons 1, 6 and 30 with
the same config otherwise (the bench's flags; the suite's default is
:data:`SUITE_EPOCHS` epochs to keep it to minutes on two cores). A trace that is
missing or too short is listed as skipped with its one-line reason. The table gives,
per trace, quantity and horizon, the ensemble's MAE over the best single expert's with
its 90 % block-bootstrap interval, the best expert, the coverage of the ensemble's
80 % interval and, for requests/s, the Poisson floor over the best expert's MAE
(:mod:`trainer.evaluation.ensemble`).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from predictor.errors import ConfigError, TrainingError
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from trainer.evaluation.ensemble import RATIO_ALIGN, RATIO_COLUMNS, RATIO_NOTE, ratio_lines
from trainer.evaluation.load import load_backtest
from trainer.evaluation.load_config import LoadBacktestConfig

log = logging.getLogger(__name__)

SUITE_HORIZONS = (1, 6, 30)
#: training epochs of the suite's networks unless --epochs says otherwise
SUITE_EPOCHS = 5
#: the targets the table is read against
TARGET_RATIO, GOOD_RATIO, COVERAGE_BAND = 1.0, 0.97, (0.75, 0.85)


@dataclass(frozen=True)
class SuiteTrace:
    """One trace of the suite: a file under the data folder, or a synthetic variant."""

    name: str
    bin_s: float
    path: str = ""  # relative to the data folder; empty: synthetic
    variant: str = "week"
    rows: int = 0
    rate_scale: float = 1.0


def suite_traces() -> list[SuiteTrace]:
    """The suite's traces, in table order (module docstring)."""
    return [
        SuiteTrace("azure_code", 10.0, path="azure-2023/AzureLLMInferenceTrace_code.csv"),
        SuiteTrace("burstgpt_1", 60.0, path="burstgpt/BurstGPT_1_first400.csv"),
        SuiteTrace("burstgpt_3", 60.0, path="burstgpt/BurstGPT_3_first400.csv"),
        SuiteTrace("synth_week", 60.0, rows=100_000),
        *(
            SuiteTrace(f"synth_{v}", 10.0, variant=v, rows=80_000, rate_scale=10.0)
            for v in ("bursty", "regimes", "drift")
        ),
    ]


def read_trace(trace: SuiteTrace, data_dir: Path, seed: int) -> pd.DataFrame:
    """The trace's requests, cleaned as the bench reads any trace."""
    if trace.path:
        path = data_dir / trace.path
        if not path.is_file():
            raise ConfigError(f"{path} is not there")
        return load_trace(path)[0]
    df = synthesize(trace.rows, seed=seed, rate_scale=trace.rate_scale, variant=trace.variant)
    with tempfile.TemporaryDirectory() as tmp:  # the same reader as a synthetic bench run
        return load_trace(write_trace(df, Path(tmp) / f"{trace.name}.csv"))[0]


def run_suite(
    data_dir: Path,
    cfg: LoadBacktestConfig,
    traces: list[SuiteTrace] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the load walk-forward on every trace; ``{"config", "traces", "wall_s"}``.

    ``cfg`` gives everything but the bin size and horizons, which are each trace's
    and :data:`SUITE_HORIZONS`.
    """
    started = time.perf_counter()
    out = []
    for trace in suite_traces() if traces is None else traces:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"trace": trace.name, "bin_s": trace.bin_s}
        try:
            df = read_trace(trace, data_dir, cfg.seed)
            tcfg = dataclasses.replace(cfg, bin_s=trace.bin_s, horizons=SUITE_HORIZONS)
            report = load_backtest(df, tcfg, progress=progress)
        except (ConfigError, TrainingError) as exc:
            entry["skipped"] = str(exc)
            log.warning("suite: %s skipped: %s", trace.name, exc)
        else:
            tc = report["task_config"]
            entry.update(
                rows=tc["rows"],
                bins=sum(s["bins"] for s in tc["streams"].values()),
                forecasts=tc["forecasts"],
                ensemble=report.get("ensemble"),
                results=report["results"],
            )
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        log.info("suite: %s in %.1fs", trace.name, entry["wall_s"])
        out.append(entry)
    config = {**dataclasses.asdict(cfg), "horizons": list(SUITE_HORIZONS)}
    config.pop("bin_s")
    return {"config": config, "traces": out, "wall_s": round(time.perf_counter() - started, 1)}


def suite_markdown(suite: Mapping[str, Any]) -> str:
    """One table: trace × quantity × horizon, ratios with intervals and coverage."""
    lines = [
        "## Load ensemble vs the best single expert, per trace",
        "",
        f"| trace | bin | {RATIO_COLUMNS} |",
        f"|---|---:|{RATIO_ALIGN}|",
    ]
    ratios, covs, skipped = [], [], []
    for entry in suite["traces"]:
        if "skipped" in entry:
            skipped.append(f"- {entry['trace']}: skipped ({entry['skipped']})")
            continue
        ens = entry.get("ensemble") or {"ratios": []}
        lines += ratio_lines(ens, (entry["trace"], f"{entry['bin_s']:g} s"))
        ratios += [r["ratio"] for r in ens["ratios"] if r["ratio"] is not None]
        covs += [r["coverage"] for r in ens["ratios"] if r["coverage"] is not None]
    n = len(ratios)
    lo, hi = COVERAGE_BAND
    lines += [
        "",
        f"{sum(r <= TARGET_RATIO for r in ratios)}/{n} cells at or below {TARGET_RATIO:.2f}x "
        f"the best expert, {sum(r <= GOOD_RATIO for r in ratios)}/{n} at or below "
        f"{GOOD_RATIO:.2f}x; coverage of the 80 % interval within {lo:.2f}-{hi:.2f} in "
        f"{sum(lo <= c <= hi for c in covs)}/{len(covs)} cells. Wall time {suite['wall_s']:.0f} s "
        "(per trace: "
        + ", ".join(f"{e['trace']} {e['wall_s']:.0f} s" for e in suite["traces"])
        + ").",
        "",
        RATIO_NOTE,
    ]
    if skipped:
        lines += ["", *skipped]
    return "\n".join(lines) + "\n"
