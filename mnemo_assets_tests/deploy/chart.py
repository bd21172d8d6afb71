"""What the official Dagster Helm chart makes of deploy/k8s/values.yaml, for the parts Dagster reads.

``helm`` and the chart cannot be had on this machine (no Debian or PyPI package ships either, and
nothing else is reachable), so ``helm template`` cannot run here. This module restates, for the
keys our values.yaml sets, what the chart's templates render:

* the instance's ``dagster.yaml`` (chart ``helm/dagster/templates/configmap-instance.yaml`` and
  ``templates/helpers/instance/_postgresql.tpl``, ``_run-launcher.tpl``, ``_run-coordinator.tpl``,
  ``_concurrency.tpl`` in the dagster repository);
* the code server's ``DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT`` (subchart
  ``charts/dagster-user-deployments/templates/_helpers.tpl``,
  ``dagsterUserDeployments.k8sContainerContext``), which run pods inherit.

The tests then hand both to Dagster's own loaders (instance config schema, ``DagsterInstance``,
``K8sRunLauncher``), and check values.yaml's keys against the chart's values schema (the pydantic
models in ``helm/dagster/schema/schema/charts``), restated in :data:`SCHEMA`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "k8s" / "values.yaml"
RELEASE = "dagster"
NAMESPACE = "dagster"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default


def load_values(path: Path = VALUES) -> dict:
    return yaml.safe_load(path.read_text())


def _compact(d: Mapping[str, Any]) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def postgres_config(values: Mapping) -> dict:
    pg = values["postgresql"]
    db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},  # from the secret global.postgresqlSecretName
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def run_launcher_config(values: Mapping, namespace: str = NAMESPACE) -> dict:
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or namespace,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": RELEASE,
        "dagster_home": DAGSTER_HOME,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = [c["name"] for c in k8s["envConfigMaps"] if "name" in c]
    if k8s.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"] if "name" in s]
    for key, out in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ):
        if k8s.get(key):
            config[out] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def run_coordinator_config(values: Mapping) -> dict:
    rc = values["dagsterDaemon"]["runCoordinator"]
    assert rc["type"] == "QueuedRunCoordinator"
    qrc = rc["config"].get("queuedRunCoordinator") or {}
    concurrency_enabled = bool((values.get("concurrency") or {}).get("enabled"))
    out: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    if not _compact(qrc):
        return out
    config: dict[str, Any] = {}
    if not concurrency_enabled or qrc.get("maxConcurrentRuns") is not None:
        config["max_concurrent_runs"] = -1 if qrc.get("maxConcurrentRuns") is None else qrc["maxConcurrentRuns"]
    if qrc.get("tagConcurrencyLimits"):
        config["tag_concurrency_limits"] = qrc["tagConcurrencyLimits"]
    for key, name in (
        ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
        ("dequeueUseThreads", "dequeue_use_threads"),
        ("dequeueNumWorkers", "dequeue_num_workers"),
    ):
        if qrc.get(key):
            config[name] = qrc[key]
    out["config"] = config
    return out


def concurrency_config(values: Mapping) -> dict:
    c = values.get("concurrency") or {}
    pools, runs = c.get("pools") or {}, c.get("runs") or {}
    qrc = values["dagsterDaemon"]["runCoordinator"]["config"].get("queuedRunCoordinator") or {}
    # the chart refuses run limits set in both places
    if runs.get("maxConcurrentRuns") is not None and qrc.get("maxConcurrentRuns") is not None:
        raise ValueError("Cannot set both concurrency.runs.maxConcurrentRuns and queuedRunCoordinator.maxConcurrentRuns")
    if runs.get("tagConcurrencyLimits") and qrc.get("tagConcurrencyLimits"):
        raise ValueError("Cannot set both concurrency.runs.tagConcurrencyLimits and queuedRunCoordinator.tagConcurrencyLimits")
    out: dict[str, Any] = {}
    rendered_pools = _compact(
        {
            "default_limit": pools.get("defaultLimit"),
            "granularity": pools.get("granularity"),
            "op_granularity_run_buffer": pools.get("opGranularityRunBuffer"),
        }
    )
    if rendered_pools:
        out["pools"] = rendered_pools
    rendered_runs = _compact({"max_concurrent_runs": runs.get("maxConcurrentRuns"), "tag_concurrency_limits": runs.get("tagConcurrencyLimits")})
    if rendered_runs:
        out["runs"] = rendered_runs
    return out


def instance_yaml(values: Mapping, namespace: str = NAMESPACE) -> dict:
    """The ``dagster.yaml`` the chart puts in its ``<release>-instance`` ConfigMap."""
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    pg = postgres_config(values)
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage", "config": copy.deepcopy(pg)},
        "run_launcher": run_launcher_config(values, namespace),
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": copy.deepcopy(pg)},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", "config": copy.deepcopy(pg)},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    if values["dagsterDaemon"]["runCoordinator"]["enabled"]:
        instance["run_coordinator"] = run_coordinator_config(values)
    if (values.get("concurrency") or {}).get("enabled"):
        instance["concurrency"] = concurrency_config(values)
    return instance


def user_deployment(values: Mapping, name: str = "mnemo-assets") -> dict:
    return next(d for d in values["dagster-user-deployments"]["deployments"] if d["name"] == name)


def image_name(image: Mapping) -> str:
    return f"{image['repository']}:{image['tag']}"


def container_context(values: Mapping, deployment: Mapping, namespace: str = NAMESPACE) -> dict:
    """The code server's ``DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT`` (with includeConfigInLaunchedRuns)."""
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env"]
        + [c["name"] for c in deployment.get("envConfigMaps") or [] if "name" in c],
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [s["name"] for s in deployment["envSecrets"] if "name" in s]
    for key, out in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"), ("resources", "resources")):
        if deployment.get(key):
            k8s[out] = deployment[key]
    k8s["namespace"] = namespace
    k8s["service_account_name"] = f"{RELEASE}-dagster-user-deployments-user-deployments"
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    k8s["run_k8s_config"] = {"pod_spec_config": {"automount_service_account_token": True}}
    return {"k8s": k8s}


# The chart's values schema (helm/dagster/schema/schema/charts/...) for the sections values.yaml
# touches: the keys each section accepts. A key outside these is either rejected by the chart's
# values.schema.json or silently ignored by its templates: a mistake either way.
_IMAGE = {"repository", "tag", "pullPolicy"}
SCHEMA: dict[str, set[str]] = {
    "": {
        "dagsterWebserver",
        "dagster-user-deployments",
        "postgresql",
        "generatePostgresqlPasswordSecret",
        "generateCeleryConfigSecret",
        "rabbitmq",
        "redis",
        "flower",
        "ingress",
        "imagePullSecrets",
        "computeLogManager",
        "scheduler",
        "runLauncher",
        "pythonLogs",
        "dagsterDaemon",
        "busybox",
        "migrate",
        "telemetry",
        "serviceAccount",
        "global",
        "retention",
        "concurrency",
        "additionalInstanceConfig",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"},
    "dagsterWebserver.image": _IMAGE,
    "dagsterDaemon": {
        "enabled",
        "image",
        "runCoordinator",
        "heartbeatTolerance",
        "env",
        "envConfigMaps",
        "envSecrets",
        "deploymentLabels",
        "labels",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "annotations",
        "runMonitoring",
        "runRetries",
        "sensors",
        "schedules",
        "schedulerName",
        "volumeMounts",
        "volumes",
    },
    "dagsterDaemon.image": _IMAGE,
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns",
        "tagConcurrencyLimits",
        "dequeueIntervalSeconds",
        "dequeueNumWorkers",
        "dequeueUseThreads",
        "blockOpConcurrencyLimitedRuns",
    },
    "concurrency": {"enabled", "pools", "runs"},
    "concurrency.pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "concurrency.runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name",
        "image",
        "port",
        "dagsterApiGrpcArgs",
        "codeServerArgs",
        "includeConfigInLaunchedRuns",
        "env",
        "envConfigMaps",
        "envSecrets",
        "annotations",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "labels",
        "volumeMounts",
        "volumes",
        "schedulerName",
        "initContainers",
        "sidecarContainers",
    },
    "dagster-user-deployments.deployments[].image": _IMAGE,
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image",
        "imagePullPolicy",
        "jobNamespace",
        "loadInclusterConfig",
        "kubeconfigFile",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
        "labels",
        "failPodOnRunFailure",
        "resources",
        "schedulerName",
        "securityContext",
        "runK8sConfig",
    },
    "postgresql": {
        "postgresqlScheme",
        "image",
        "enabled",
        "postgresqlHost",
        "postgresqlUsername",
        "postgresqlPassword",
        "postgresqlDatabase",
        "postgresqlParams",
        "service",
    },
    "postgresql.service": {"port"},
    "telemetry": {"enabled"},
}


def unknown_keys(values: Mapping) -> list[str]:
    """Keys of values.yaml that the chart's schema does not know, in the sections :data:`SCHEMA` covers."""
    problems = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, f"{path}[]")
            return
        if not isinstance(node, Mapping):
            return
        if path in SCHEMA:
            allowed = SCHEMA[path]
            problems.extend(f"{path or '<top>'}.{k}" for k in node if k not in allowed)
        for key, child in node.items():
            walk(child, f"{path}.{key}" if path else key)

    walk(values, "")
    return problems
