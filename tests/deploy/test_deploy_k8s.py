"""``deploy/k8s/`` manifests: they parse, run real ``reqcast`` flags and variables,
agree on topics and ports, and the autoscaler queries exported series."""

from __future__ import annotations

import argparse
import re
from typing import Any

import yaml
from deploy_cli import DEPLOY, check_env, effective_args, invocations, load_all
from deploy_queries import autoscaler_exprs

K8S = DEPLOY / "k8s"


def k8s_docs() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in load_all(path)]


def k8s_deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}


def k8s_runs(container: dict[str, Any]) -> list[argparse.Namespace]:
    env = {e["name"]: e.get("value", "set-from-secret") for e in container.get("env", [])}
    if container.get("command"):  # a shell script: [/bin/sh, -c, SCRIPT]
        argvs = invocations(container["command"][:-1], container["command"][-1:])
    else:  # arguments to the image's ENTRYPOINT, reqcast
        argvs = invocations(None, container.get("args"))
    where = f"k8s container {container['name']}"
    return [effective_args(a, env, where) for a in argvs]


def test_k8s_manifests_parse() -> None:
    kinds = sorted(d["kind"] for d in k8s_docs())
    assert kinds.count("Deployment") == 2 and kinds.count("Service") == 2
    assert {"PersistentVolumeClaim", "ScaledObject"} <= set(kinds)
    for doc in k8s_docs():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_k8s_containers_use_real_flags_env_and_ports() -> None:
    services = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Service"}
    seen: dict[str, argparse.Namespace] = {}
    first: dict[str, argparse.Namespace] = {}
    for name, dep in k8s_deployments().items():
        spec = dep["spec"]["template"]["spec"]
        mounts_ok = {v["name"] for v in spec.get("volumes", [])}
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert "reqcast" in container["image"]
            assert {m["name"] for m in container.get("volumeMounts", [])} <= mounts_ok
            runs = k8s_runs(container)
            commands = [a.command for a in runs]
            env = {e["name"] for e in container.get("env", [])}
            if runs:
                check_env(env, commands, f"{name}/{container['name']}")
            first |= {a.task: a for a in runs if a.command == "train"}
            if container in spec["containers"]:
                (args,) = runs
                seen[args.command] = args
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                assert ports["metrics"] == args.metrics_port
                assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
                assert container["resources"]["requests"]
                paths = {m["mountPath"] for m in container["volumeMounts"]}
                assert args.model_dir in paths
                (svc,) = [
                    s
                    for s in services.values()
                    if s["spec"]["selector"].items()
                    <= dep["spec"]["template"]["metadata"]["labels"].items()
                ]
                assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    serve, trainer = seen["serve"], seen["trainer"]
    assert serve.no_refit
    assert serve.input_topic == trainer.input_topic
    assert serve.model_topic == trainer.model_topic
    assert serve.bootstrap_servers == trainer.bootstrap_servers
    # first models of both tasks; load models for the bins serve forecasts
    assert set(first) == {"next_request", "load"}
    assert first["load"].bin_s == serve.bin_s
    # the autoscaler reads a horizon that serve publishes
    horizons = {int(h) for q in autoscaler_exprs() for h in re.findall(r'horizon_bins="(\d+)"', q)}
    assert horizons and horizons <= set(serve.horizons)


def test_autoscaler_targets_the_inference_deployment(exported: dict[str, set[str]]) -> None:
    (scaled,) = [d for d in load_all(K8S / "autoscaler.yaml") if d["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "vllm"
    queries = autoscaler_exprs()
    assert any("reqcast_forecast_load" in q and 'bound="upper"' in q for q in queries)
    # the HPA alternative is commented out; it must still be a valid manifest
    text = (K8S / "autoscaler.yaml").read_text()
    block = text.split("# --- begin HPA alternative\n")[1].split("# --- end HPA alternative")[0]
    hpa = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "vllm"
    (metric,) = hpa["spec"]["metrics"]
    selector = metric["external"]["metric"]
    assert set(selector["selector"]["matchLabels"]) <= exported[selector["name"]]
