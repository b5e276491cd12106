"""Benchmarks, kept off the serving path.

Two benchmarks measure the service from the outside and write their figures to a file;
each has one entry module that provides ``add_parser(p)`` and ``run(args)`` like a
command module, and a few modules of one idea each beside it:

- ``reqcast bench stream`` (throughput, latency and memory against a bare Kafka echo):
  :mod:`stream.bench.throughput` (flags, the run), ``throughput_setup`` (topics, events,
  models), ``throughput_pipelines`` (each pipeline measured in a process of its own,
  run by ``throughput_worker``), ``throughput_report`` (ratios, targets, table);
- ``reqcast bench swap`` (the pause a hot swap causes, and what a refit costs):
  :mod:`stream.bench.swap` (flags, the run), ``swap_pause`` and ``swap_analysis`` (the
  paced stream and its delivery gaps), ``swap_refit`` (refit time), ``swap_report``.

Only :mod:`stream.commands.bench` imports this package; nothing that serves does.
"""
