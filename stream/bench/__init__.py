"""Benchmarks, kept off the serving path.

Each module here measures the service from the outside and writes its figures to a
file: :mod:`stream.bench.throughput` (``reqcast bench stream``: throughput, latency and
memory against a bare Kafka echo, with the pipelines in processes of their own run by
:mod:`stream.bench.throughput_worker`) and :mod:`stream.bench.swap` (``reqcast bench
swap``: the pause a hot swap causes, and what a refit costs). Each provides
``add_parser(p)`` and ``run(args)`` like a command module.

Only :mod:`stream.commands.bench` imports this package; nothing that serves does.
"""
