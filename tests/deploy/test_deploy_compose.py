"""``deploy/docker-compose.yml`` agrees with the CLI, the topics and Prometheus.

Every ``reqcast`` command a service runs parses with the real CLI and its
``REQCAST_*`` environment; the topics they use are the ones the topic-creation step
makes; Prometheus scrapes the ports they listen on. No Docker daemon is needed.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from typing import Any

import pytest
from deploy_cli import DEPLOY, ROOT, check_env, effective_args, invocations, load_yaml

COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus"

#: images compose may pull instead of building deploy/Dockerfile (pinned, official)
PUBLIC_IMAGES = {"apache/kafka", "prom/prometheus", "grafana/grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)  # type: ignore[no-any-return]


def reqcast_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, svc in compose["services"].items():
        if "build" in svc:
            yield name, svc


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def compose_runs(compose: dict[str, Any]) -> Iterator[tuple[str, argparse.Namespace]]:
    """(service, parsed args) of every ``reqcast`` command compose runs."""
    for name, svc in reqcast_services(compose):
        for argv in invocations(svc.get("entrypoint"), svc.get("command")):
            yield name, effective_args(argv, compose_env(svc), f"compose service {name}")


def created_topics(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Topic -> its options, from the kafka-topics.sh lines of the topic-creation step."""
    script = compose["services"]["kafka-init"]["command"][0]
    topics = {}
    for line in script.splitlines():
        m = re.search(r"--topic\s+(\S+)", line)
        if m:
            opts = dict(re.findall(r"--(partitions|config)\s+(\S+)", line))
            topics[m.group(1)] = opts
    return topics


def test_compose_images_are_built_or_pinned_public_images(compose: dict[str, Any]) -> None:
    built = dict(reqcast_services(compose))
    assert {"serve-1", "serve-2", "trainer", "replayer", "models-init"} <= set(built)
    for name, svc in built.items():
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert context == ROOT, f"{name}: build context must be the repository root"
        assert (context / svc["build"]["dockerfile"]) == DEPLOY / "Dockerfile"
    for name, svc in compose["services"].items():
        if name in built:
            continue
        repo, _, tag = svc["image"].partition(":")
        assert repo in PUBLIC_IMAGES, f"{name}: image {svc['image']} is neither built nor known"
        assert tag and tag != "latest", f"{name}: pin the image tag"


def test_compose_dependencies_volumes_and_mounts(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        assert set(deps) <= set(services), f"{name} depends on unknown services"
        for mount in svc.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
    for name in ("serve-1", "serve-2", "trainer"):
        deps = services[name]["depends_on"]
        assert deps["kafka-init"]["condition"] == "service_completed_successfully"
        assert deps["models-init"]["condition"] == "service_completed_successfully"


def test_compose_commands_use_real_flags_and_env(compose: dict[str, Any]) -> None:
    ran: dict[str, list[str]] = {}
    for name, svc in reqcast_services(compose):
        argvs = invocations(svc.get("entrypoint"), svc.get("command"))
        assert argvs, f"{name} runs no reqcast command"
        commands = [a[0] for a in argvs]
        ran[name] = commands
        check_env(set(compose_env(svc)), commands, f"compose service {name}")
    parsed = list(compose_runs(compose))  # every command line parses with its environment
    assert ran["serve-1"] == ran["serve-2"] == ["serve"]
    assert ran["trainer"] == ["trainer"] and "replay" in ran["replayer"]
    args = {n: a for n, a in parsed if a.command in ("serve", "trainer")}
    assert args["serve-1"].no_refit and args["serve-2"].no_refit
    assert args["serve-1"].group_id == args["serve-2"].group_id != args["trainer"].group_id
    # first models: next request and load, the load models for the bins serve forecasts
    first = {a.task: a for n, a in parsed if n == "models-init" and a.command == "train"}
    assert set(first) == {"next_request", "load"}
    assert {a.preset for a in first.values()} == {"cpu"}
    assert first["load"].bin_s == args["serve-1"].bin_s == args["serve-2"].bin_s
    assert first["load"].horizon >= max(args["serve-1"].horizons)
    assert {a.model_dir for a in [*args.values(), *first.values()]} == {"/models"}


def test_compose_topics_are_created_by_the_init_step(compose: dict[str, Any]) -> None:
    topics = created_topics(compose)
    kafka = compose["services"]["kafka"]["environment"]
    advertised = {addr.split("//")[1] for addr in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    serve_replicas = 0
    for name, args in compose_runs(compose):
        if args.command in ("serve", "trainer", "replay"):
            assert args.bootstrap_servers in advertised, f"{name}: {args.bootstrap_servers}"
        if args.command == "serve":
            serve_replicas += 1
            used = [
                args.input_topic,
                args.output_topic,
                args.dlq_topic or f"{args.input_topic}.dlq",
            ]
            used.append(args.model_topic)
        elif args.command == "trainer":
            used = [args.input_topic, args.model_topic]
        elif args.command == "replay":
            used = [args.topic]
        else:
            continue
        for topic in used:
            assert topic in topics, f"{name} uses topic {topic!r} that kafka-init does not create"
        if hasattr(args, "model_topic"):
            assert topics[args.model_topic].get("config") == "cleanup.policy=compact"
    assert serve_replicas == 2
    # every replica can own a partition of the input topic
    assert int(topics["requests"]["partitions"]) >= serve_replicas
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_replayer_reads_a_mounted_trace(compose: dict[str, Any]) -> None:
    svc = compose["services"]["replayer"]
    (args,) = [a for n, a in compose_runs(compose) if n == "replayer" and a.command == "replay"]
    targets = [m.split(":")[1] for m in svc["volumes"]]
    assert any(args.data_path.startswith(t + "/") for t in targets), args.data_path
    assert args.speed or args.rate


def test_prometheus_scrapes_every_reqcast_service(compose: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    scraped = {
        target
        for job in config["scrape_configs"]
        if job["job_name"].startswith("reqcast")
        for static in job["static_configs"]
        for target in static["targets"]
    }
    listening = {
        f"{name}:{args.metrics_port}"
        for name, args in compose_runs(compose)
        if args.command in ("serve", "trainer")
    }
    assert scraped == listening
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    for rule_file in config["rule_files"]:
        assert f"./prometheus/{rule_file}:/etc/prometheus/{rule_file}:ro" in mounts


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = DEPLOY / "grafana"
    (source,) = load_yaml(grafana / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(grafana / "provisioning" / "dashboards" / "reqcast.yml")["providers"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
