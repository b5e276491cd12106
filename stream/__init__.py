"""reqcast's I/O edge and runtime: Kafka and in-process transports, replay, the
serving loop, dead letters, metrics and the ``reqcast`` command line."""
