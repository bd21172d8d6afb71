"""Docs that run: every fenced code block of README.md, the example notebook and the own-asset
example, against the quick-start store built by the README's own command.

One quick-start store per run of this module (``quickstart``): a folder holding copies of the
repository's ``mnemo.yaml`` and ``dagster.yaml``, ``.venv`` (a link to this test's environment)
and ``examples`` (a link to the repository's), in which the README's quick-start command
(``.venv/bin/mnemo materialize --start 2024-12-01 --end 2024-12-07``) runs, with its Dagster
home ``.dagster_home`` in that folder. Then, in README order:

* ```` ```python ```` blocks run alone with the environment's python (``python -c``: the working
  directory, the store folder, is on the import path as in a notebook);
* ```` ```bash ```` blocks run with bash as written (``.venv/bin/...`` resolves through the link);
* ```` ```yaml ```` blocks are loaded by their loader: a ``mnemo.yaml`` fragment merged into the
  repository's ``mnemo.yaml`` through :func:`mnemo_assets.config.load_settings` (and its metadata
  spec imported), a ``dagster.yaml`` through Dagster's instance-config loader;
* blocks without a language (the diagrams) are text; every other block that does not run is in
  :data:`NOT_RUNNABLE` with the reason, and nothing else is skipped.

The blocks depend on each other as a reader's session would (the reading block of "Add your own
asset" reads what the block before it materialized), so they run in order, on one worker.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOTEBOOK = REPO / "examples" / "first_notebook.ipynb"
NOTEBOOK_FIGURES = ("notebook-close-volume.png", "notebook-returns-quantiles.png")
#: the environment the tests run in: the README's ``.venv`` (``.venv/bin/...`` in the blocks)
VENV = Path(sys.prefix)
BLOCK_TIMEOUT = 900


# ----------------------------------------------------------------------------- the README's blocks
@dataclass(frozen=True)
class Block:
    index: int
    line: int
    lang: str
    code: str
    heading: str

    @property
    def id(self) -> str:
        return f"{self.index:02d}-{self.lang}-line{self.line}"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README with a language, in order (indented fences included,
    dedented); blocks without a language are the diagrams and are left out."""
    text = README.read_text() if text is None else text
    blocks: list[Block] = []
    fence = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
    for m in fence.finditer(text):
        lang = m.group("lang").lower()
        if not lang:
            continue
        indent = len(m.group("indent"))
        code = "\n".join(line[indent:] for line in m.group("body").splitlines()) + "\n"
        line = text.count("\n", 0, m.start()) + 1
        heading = ([h for h in re.findall(r"^#+ (.+)$", text[: m.start()], re.M)] or [""])[-1]
        blocks.append(Block(len(blocks) + 1, line, lang, code, heading))
    return blocks


@dataclass(frozen=True)
class NotRunnable:
    """A README block that cannot run here, recognised by a pattern of its text, and why."""

    pattern: str
    reason: str

    def matches(self, block: Block) -> bool:
        return re.search(self.pattern, block.code, re.M) is not None


#: every block that does not run here, and why (nothing else is skipped)
NOT_RUNNABLE = [
    NotRunnable(
        r"MNEMO_SOURCE=http\b",
        "downloads the real archive from data.binance.vision: needs the public internet (not reachable here or in CI) and GBs per day",
    ),
    NotRunnable(
        r"^\s*(\S+=\S+\s+)*(docker|helm|kubectl|minikube|kind)\b",
        "deploys to a cluster: needs docker/helm/kubectl and a Kubernetes cluster",
    ),
    NotRunnable(
        r"DAGSTER_PG_HOST=",
        "starts a webserver and a daemon that run until stopped, on the reader's PostgreSQL server; the same "
        "steps run against a real PostgreSQL in mnemo_assets_tests/deploy/test_postgres_stack.py",
    ),
]

#: a block writing to ``s3://bucket/...`` runs with the AWS variables of a real S3 endpoint
#: (``moto_server``) in its environment and that bucket created, as a reader's credentials would be
S3_ROOT = re.compile(r"MNEMO_DATA_ROOT=s3://(?P<bucket>[a-z0-9.-]+)/")

#: what a block's output must say (a block that runs but does not do what the README says fails)
EXPECTED_OUTPUT = {
    "re.query(queries": ["max_tick_to_query_lag", "return"],
    "def my_spec(": ["liq_12h", "vol_2d"],
    "/tmp/bad-mnemo.yaml": ["grids.intervals", "7m"],
    "--select 'group:binance_cm'": ["mnemo: done"],
    "MNEMO_DATA_ROOT=s3://": ["mnemo: done", "s3://"],
    "ledger.degraded()": ["status", "reasons"],
    "grid.height, grid.schema": ["String"],
    'ParquetDataset("custom/vwap_1h': ["datetime.date(2024, 12, 3)", "vwap"],
}

BLOCKS = readme_blocks()
BASH = {"bash", "sh", "shell"}


def not_runnable(block: Block) -> NotRunnable | None:
    found = [n for n in NOT_RUNNABLE if n.matches(block)]
    assert len(found) <= 1, f"README block {block.id} matches several NOT_RUNNABLE entries"
    return found[0] if found else None


def test_readme_blocks_are_found_and_only_listed_ones_skipped():
    langs = {b.lang for b in BLOCKS}
    assert langs <= BASH | {"python", "yaml"}, f"README blocks in a language this test cannot run: {langs}"
    assert sum(b.lang == "python" for b in BLOCKS) >= 4 and any(b.lang in BASH for b in BLOCKS) and any(b.lang == "yaml" for b in BLOCKS)
    skipped = [b for b in BLOCKS if not_runnable(b)]
    assert [b.heading for b in skipped if "MNEMO_SOURCE=http" in b.code] == ["The real archive"]
    # the first two lines of the README are inline commands (not fenced): the quick start runs
    # below, the test command is the one running this test
    assert quickstart_command().startswith(".venv/bin/mnemo materialize")


# ----------------------------------------------------------------------------- the quick-start store
def quickstart_command() -> str:
    """The README's quick-start command after its setup steps (the venv and the install are
    the environment running this test)."""
    first = re.search(r"^Set up and run the main job.*?\n\n`(?P<cmd>[^`]+)`", README.read_text(), re.S | re.M)
    assert first, "README: the quick-start line moved; update quickstart_command()"
    steps = [s.strip() for s in first.group("cmd").split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1].startswith(".venv/bin/pip install -e ."), steps
    (run,) = steps[2:]
    return run


def block_env(folder: Path) -> dict[str, str]:
    """The environment of a reader in the store folder: no ``MNEMO_*`` from this test run, the
    Dagster home the README and ``mnemo`` use (``./.dagster_home``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNEMO_")}
    env["DAGSTER_HOME"] = str(folder / ".dagster_home")
    env.pop("VIRTUAL_ENV", None)
    return env


def run_in(folder: Path, argv: list[str], timeout: float = BLOCK_TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, check=False, cwd=folder, env=env or block_env(folder), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    """The quick-start store, built as the README says, once for the module."""
    folder = tmp_path_factory.mktemp("quickstart")
    for name in ("mnemo.yaml", "dagster.yaml"):
        shutil.copyfile(REPO / name, folder / name)
    (folder / ".venv").symlink_to(VENV, target_is_directory=True)
    (folder / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    done = run_in(folder, ["bash", "-c", quickstart_command()], timeout=1800)
    assert done.returncode == 0, f"quick start failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "mnemo: done" in done.stdout
    return folder


def test_quickstart_store_holds_the_week(quickstart):
    from mnemo_assets.storage.parquet import existing_days

    days = [date(2024, 12, 1) + timedelta(days=k) for k in range(7)]
    root = quickstart / "data"
    assert (quickstart / ".dagster_home" / "dagster.yaml").exists()
    assert existing_days(root, "binance/grids/spot/last_trade/10m/peg_symbol=USDT") == days
    assert existing_days(root, "binance/metadata/spot/1h/peg_symbol=USDT") == days[:-1]  # the last day waits for D+1


# ----------------------------------------------------------------------------- (a) every README block
def load_yaml_block(block: Block, scratch: Path) -> None:
    """Load a YAML block with the loader it is for."""
    from mnemo_assets.config import Settings, load_settings

    fragment = yaml.safe_load(block.code)
    assert isinstance(fragment, dict) and fragment, f"README block {block.id}: not a YAML mapping"
    dagster_keys = {
        "storage",
        "run_coordinator",
        "run_launcher",
        "run_monitoring",
        "run_retries",
        "telemetry",
        "concurrency",
        "compute_logs",
        "local_artifact_storage",
        "event_log_storage",
        "run_storage",
        "schedule_storage",
        "scheduler",
        "sensors",
        "schedules",
        "code_servers",
        "retention",
        "auto_materialize",
    }
    if set(fragment) <= set(Settings.model_fields):
        # a mnemo.yaml fragment: merged into the repository's mnemo.yaml (every default spelled out)
        def merge(base, extra):
            for k, v in extra.items():
                base[k] = merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            return base

        merged = merge(yaml.safe_load((REPO / "mnemo.yaml").read_text()), fragment)
        path = scratch / f"mnemo-block-{block.index}.yaml"
        path.write_text(yaml.safe_dump(merged))
        settings = load_settings(path, env={})
        for interval in settings.metadata.intervals:  # a spec names a function: import and call it
            assert settings.metadata.load_spec(interval) is not None
    elif set(fragment) <= dagster_keys:
        from dagster._core.instance.config import dagster_instance_config

        home = scratch / f"dagster-home-{block.index}"
        home.mkdir()
        (home / "dagster.yaml").write_text(block.code)
        dagster_instance_config(str(home))
    else:
        raise AssertionError(f"README block {block.id}: a YAML block for neither mnemo.yaml nor dagster.yaml: {sorted(fragment)}")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, quickstart: Path, tmp_path: Path, request):
    reason = not_runnable(block)
    if reason is not None:
        pytest.skip(f"README line {block.line} ({block.heading}): {reason.reason}")
    if block.lang == "yaml":
        load_yaml_block(block, tmp_path)
        return
    if block.lang == "python":
        done = run_in(quickstart, [str(quickstart / ".venv" / "bin" / "python"), "-c", block.code])
    else:
        env = block_env(quickstart)
        if (s3 := S3_ROOT.search(block.code)) is not None:
            server = request.getfixturevalue("moto_server")
            server.create_bucket(s3.group("bucket"))
            env = {k: v for k, v in env.items() if not k.startswith("AWS_")} | server.env
            env["MNEMO_CACHE_DIR"] = str(tmp_path / "cache")
        done = run_in(quickstart, ["bash", "-e", "-o", "pipefail", "-c", block.code], env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README block at line {block.line} ({block.heading}) failed:\n{block.code}\n--- output:\n{output[-6000:]}"
    for marker, wanted in EXPECTED_OUTPUT.items():
        if marker in block.code:
            missing = [w for w in wanted if w not in output]
            assert not missing, f"README block at line {block.line}: output lacks {missing}:\n{output[-4000:]}"


# ----------------------------------------------------------------------------- (b) the notebook
def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_notebook_runs_and_draws_its_figures(quickstart: Path, tmp_path: Path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    figures = tmp_path / "figures"
    for k in [k for k in os.environ if k.startswith("MNEMO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MNEMO_FIGURES_DIR", str(figures))
    monkeypatch.setenv("DAGSTER_HOME", str(quickstart / ".dagster_home"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(quickstart)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert "store: data" in "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for name in NOTEBOOK_FIGURES:
        drawn, committed = figures / name, REPO / "docs" / name
        assert drawn.stat().st_size > 20_000, f"{name}: an empty figure?"
        # the committed figure (shown in the README) is this notebook's: same size in pixels
        assert png_size(drawn) == png_size(committed)
        assert f"(docs/{name})" in README.read_text()


# ----------------------------------------------------------------------------- (c) the own-asset example
def example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mnemo_docs_my_assets", REPO / "examples" / "my_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_settings(root: Path):
    from mnemo_assets.config import load_settings

    settings = load_settings(REPO / "mnemo.yaml", env={})
    return settings.model_copy(update={"data_root": str(root)})


def materialize_vwap(module, root: Path, start: str, end: str):
    from dagster import DagsterInstance, materialize

    defs = module.build_example_definitions(example_settings(root))
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    return materialize(
        list(defs.assets),
        selection=[module.VWAP_KEY],
        tags=tags,
        resources=defs.resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_example_asset_is_its_pure_function_on_the_stored_grid(quickstart: Path):
    import mnemo_assets as ms

    module = example_module()
    root = quickstart / "data"
    # the whole week in one batched run (several days per run, as in a backfill)
    result = materialize_vwap(module, root, "2024-12-01", "2024-12-07")
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    grid = ms.binance.BinanceLastTradesGrid("USDT", "10m", root=str(root))
    stored = ms.binance.ParquetDataset(module.DATASET, root=str(root))
    assert stored.partitions == grid.partitions
    for day in stored.partitions:
        got = stored[day].collect().with_columns(pl.col("symbol").cast(pl.String))
        want = module.hourly_vwap(grid[day])
        assert got.schema == module.VWAP_SCHEMA and got.height > 0
        assert got.equals(want), day
        # rows = symbols × hours present in that day's grid
        assert got.height == grid[day].select(pl.struct("symbol", pl.col("time").dt.truncate("1h")).n_unique()).collect().item()
    # the definition the UI shows: dataset, schema, checks, partitions and policy of the project's assets
    defs = module.build_example_definitions(example_settings(root))
    node = defs.resolve_asset_graph().get(module.VWAP_KEY)
    assert node.metadata["mnemo/dataset"] == module.DATASET
    assert [c.name for c in node.metadata["dagster/column_schema"].columns] == list(module.VWAP_SCHEMA)
    assert {k.name for k in node.check_keys} == {"vwap_within_range", "one_row_per_symbol_hour"}
    assert node.backfill_policy.max_partitions_per_run == 30 and node.partitions_def.get_first_partition_key() == "2024-12-01"
    assert node.automation_condition is not None
    daily = defs.resolve_sensor_def("mnemo_daily")
    assert module.VWAP_KEY in daily.asset_selection.resolve(defs.resolve_asset_graph())


def test_example_check_blocks_a_bad_day(quickstart: Path, tmp_path: Path):
    from upath import UPath

    import mnemo_assets as ms
    from mnemo_assets.grids import GRID_SCHEMA
    from mnemo_assets.storage.layout import grid_dataset
    from mnemo_assets.storage.parquet import local_staging_dir, write_partition

    module = example_module()
    day = date(2024, 12, 3)
    good = ms.binance.BinanceLastTradesGrid("USDT", "10m", root=str(quickstart / "data"))[day].collect()
    # the pure checks: a planted vwap outside its hour's range, a duplicated row
    vwap = module.hourly_vwap(good)
    assert module.vwap_violations(vwap, good) == {"vwap_within_range": 0, "one_row_per_symbol_hour": 0}
    assert module.vwap_violations(vwap.with_columns(pl.col("vwap") * 1.5), good)["vwap_within_range"] == vwap.height
    assert module.vwap_violations(pl.concat([vwap, vwap.head(1)]), good)["one_row_per_symbol_hour"] == 2

    # the asset: a store with the good day published, then a planted bad grid (one BTC bucket's
    # high below its own vwap, as a corrupted input would be)
    root = tmp_path / "store"
    dataset = grid_dataset("spot", "10m", "USDT")
    write_partition(good.with_columns(pl.col("symbol").cast(pl.String)), root, dataset, day, GRID_SCHEMA)
    assert materialize_vwap(module, root, "2024-12-03", "2024-12-03").success
    published = root / module.DATASET / f"date={day}" / "part-0.parquet"
    before = published.read_bytes()
    first_hour = good.filter(pl.col("symbol") == "BTC")["time"][0].replace(minute=0)
    btc = (pl.col("symbol").cast(pl.String) == "BTC") & (pl.col("time").dt.truncate("1h") == first_hour)
    bad = good.with_columns(
        pl.col("symbol").cast(pl.String),
        pl.when(btc).then(pl.col("low") * 0.5).otherwise(pl.col("high")).alias("high"),
        pl.when(btc).then(pl.col("low") * 0.5).otherwise(pl.col("low")).alias("low"),
    )
    write_partition(bad, root, dataset, day, GRID_SCHEMA)

    result = materialize_vwap(module, root, "2024-12-03", "2024-12-03")
    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"vwap_within_range"}
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "blocking check(s) failed: vwap_within_range on 2024-12-03 (1)" in failure and "Nothing was published" in failure
    # the stored partition is the good one, byte for byte; nothing left in staging
    assert published.read_bytes() == before
    staging = Path(local_staging_dir(UPath(root)))
    assert not staging.exists() or not any(staging.iterdir())


# ----------------------------------------------------------------------------- imports have no side effects
def test_importing_every_module_has_no_side_effects(tmp_path: Path):
    """What doctest collection does (import every module of the package, and the example): no
    file written, no connection attempted."""
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    code = f"""
import importlib, importlib.util, pkgutil, socket
attempts = []
def refuse(self, address, *a, **k):
    attempts.append(address)
    raise OSError("no network in this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
import mnemo_assets
names = [m.name for m in pkgutil.walk_packages(mnemo_assets.__path__, "mnemo_assets.")]
for name in names:
    importlib.import_module(name)
spec = importlib.util.spec_from_file_location("my_assets", {str(REPO / "examples" / "my_assets.py")!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
assert not attempts, attempts
assert len(names) > 30, names
print("imported", len(names))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNEMO_", "DAGSTER_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["cwd", "home"]
