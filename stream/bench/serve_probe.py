"""An in-process probe of the serving path's CPU cost per event, without Kafka.

``python -m stream.bench.serve_probe --model-dir DIR`` assembles the service as ``reqcast
serve`` does with its default flags (:mod:`stream.bench.throughput_serve`: the load task
with its ensemble, the refit worker's per-batch ``observe``; the workers are built but not
started, so nothing trains), feeds it synthetic events (:func:`~stream.bench.throughput_setup.make_events`,
encoded as the bench produces them) from a list in ``--batch-max`` batches, and collects
its messages in memory. It reports the process CPU time (all threads, the inference thread
included) per event over the events after ``--warmup``, the best and the median of
``--repeat`` runs, and a digest of every message published (``produced_at`` fixed, order
within a batch ignored: the inference thread decides it), so that a change of the serving
path can show it publishes the same bytes. ``--profile FILE`` writes a cProfile of the
last run's measured part. Models: as ``reqcast bench stream`` (tiny ones trained into an
empty ``--model-dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import threading
import time
from typing import Any

from stream.transport import Record

#: the clock the tasks stamp ``produced_at`` with during the probe (a digest must not vary)
FIXED_NOW = 1_700_000_000.0


class _ListSource:
    """Hands out ``records`` in order, ``max_records`` at a time; commits are ignored."""

    def __init__(self, records: list[Record]) -> None:
        self.records, self.pos = records, 0

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out = self.records[self.pos : self.pos + max_records]
        self.pos += len(out)
        return out

    def commit(self, offsets: dict[int, int]) -> None:
        return None

    def assignment(self) -> list[int]:
        return [0]

    def lag(self) -> int | None:
        return len(self.records) - self.pos

    def close(self) -> None:
        return None


class _ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        return None

    def close(self) -> None:
        return None


def records(n: int, seed: int, partitions: int) -> list[Record]:
    """``n`` synthetic events as the bench produces them, spread over ``partitions``."""
    from stream.bench.throughput_setup import make_events
    from stream.trace_replay import encode
    from stream.transport import partition_for

    out: list[Record] = []
    offsets = [0] * partitions
    for i, ev in enumerate(make_events(n, seed)):
        key, value = encode(ev)
        p = partition_for(key, partitions)
        out.append(Record("in", p, offsets[p], key, value, 1_600_000_000_000 + i))
        offsets[p] += 1
    return out


def digest(sent: list[tuple[str, bytes | None, bytes]], batches: list[int]) -> str:
    """sha256 of every message, batch by batch, the order within a batch ignored."""
    h = hashlib.sha256()
    start = 0
    for end in batches:
        for d in sorted(
            hashlib.sha256(v + b"|" + (k or b"")).digest() for _, k, v in sent[start:end]
        ):
            h.update(d)
        start = end
    return h.hexdigest()


def run_once(
    argv: list[str], recs: list[Record], warmup: int, profile: str | None = None
) -> dict[str, Any]:
    """One fresh service over ``recs``: CPU seconds per event after ``warmup`` events."""
    from prometheus_client import CollectorRegistry

    from stream.app import complete_service
    from stream.bench.throughput_serve import parse_serve
    from stream.metrics import Metrics
    from stream.model_slots import read_slots
    from stream.service import ForecastService, tune_gc

    args, settings = parse_serve(argv)
    metrics = Metrics(CollectorRegistry(), max_exported_streams=settings.metrics_max_streams)
    slots = read_slots(args.model_dir, list(args.models), metrics)
    source, sink = _ListSource(recs), _ListSink()
    service = ForecastService(settings.serve, source, sink, slots, metrics)
    _, workers = complete_service(settings, service, slots, metrics, start=False)
    ends: list[int] = []
    service.on_batch = lambda _svc, _msgs: ends.append(len(sink.sent))
    stop = threading.Event()
    tune_gc()
    service.run(stop, max_events=warmup)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stats = service.run(stop, max_events=len(recs))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if prof is not None and profile:
        prof.disable()
        prof.dump_stats(profile)
    measured = stats.events - warmup
    return {
        "events": stats.events,
        "measured_events": measured,
        "cpu_us_per_event": cpu / max(measured, 1) * 1e6,
        "wall_us_per_event": wall / max(measured, 1) * 1e6,
        "messages": len(sink.sent),
        "digest": digest(sink.sent, ends),
        "workers": sorted(type(w).__name__ for w in workers),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.bench.serve_probe", description=__doc__)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--models", nargs="+", default=["lstm", "dlinear"])
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--warmup", type=int, default=3_000)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--batch-max", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--serve-args", default="", help="more `reqcast serve` flags")
    p.add_argument("--profile", help="write a cProfile of the last run's measured part here")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    import torch

    from stream.bench.throughput_serve import serve_argv
    from stream.bench.throughput_setup import ensure_models

    torch.set_num_threads(1)  # as serve and the bench default
    ensure_models(a.model_dir, a.models, a.seed)
    bench = argparse.Namespace(
        models=a.models,
        batch_max=a.batch_max,
        compression="none",
        torch_threads=1,
        no_refit=False,
        no_load=False,
        serve_args=a.serve_args,
    )
    argv_serve = serve_argv(bench, a.model_dir, "")
    argv_serve += ["--input-topic", "in", "--output-topic", "out", "--model-topic", ""]
    recs = records(a.events, a.seed, a.partitions)
    time.time = lambda: FIXED_NOW  # produced_at, for the digest
    runs = []
    for i in range(a.repeat):
        runs.append(run_once(argv_serve, recs, a.warmup, a.profile if i == a.repeat - 1 else None))
    cpu = [r["cpu_us_per_event"] for r in runs]
    out = {
        "serve_args": argv_serve,
        "cpu_us_per_event_best": min(cpu),
        "cpu_us_per_event_median": statistics.median(cpu),
        "runs": runs,
        "same_digest": len({r["digest"] for r in runs}) == 1,
    }
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
