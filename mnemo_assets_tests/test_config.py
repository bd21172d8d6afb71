"""Configuration: file, environment overrides, one-line errors, derived paths, and the
resources built from it."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnemo_assets.binance.archive import LocalMirror, source_from_settings
from mnemo_assets.binance.http_archive import HttpArchive
from mnemo_assets.binance.synthetic import SyntheticArchive
from mnemo_assets.config import ConfigError, HttpSettings, Settings, SyntheticSettings, default_cache_dir, load_settings
from mnemo_assets.defs.resources import ArchiveResource
from mnemo_assets.intervals import day_interval, interval_name, to_timedelta

REPO = Path(__file__).resolve().parents[1]


def test_repository_mnemo_yaml_spells_out_the_defaults():
    assert load_settings(REPO / "mnemo.yaml", env={}) == Settings()


def test_defaults_exist_once():
    """The sources' own defaults are the settings' defaults (one synthetic start, one URL...)."""
    syn = SyntheticArchive("/nonexistent-never-written")
    d = SyntheticSettings()
    assert (syn.seed, syn.n_pairs, syn.trades_per_day, syn.start) == (d.seed, d.n_pairs, d.trades_per_day, d.start)
    assert syn.start == date(2024, 12, 1) == Settings().start_date
    http, h = HttpArchive("/nonexistent-never-written"), HttpSettings()
    assert (http.base_url, http.listing_url, http.retries, http.backoff, http.timeout, http.deadline, http.listing_ttl, http.revalidate_after) == (
        h.base_url,
        h.listing_url,
        h.retries,
        h.backoff_seconds,
        h.timeout_seconds,
        h.deadline_seconds,
        h.listing_ttl_seconds,
        h.revalidate_seconds,
    )
    text = (REPO / "mnemo.yaml").read_text()
    assert "2024-12-20" not in text and text.count("2024-12-01") == 2


def test_environment_overrides(tmp_path):
    env = {
        "MNEMO_DATA_ROOT": "s3://bucket/mnemo",
        "MNEMO_SOURCE": "mirror",
        "MNEMO_MIRROR_DIR": "/mnt/binance",
        "MNEMO_START_DATE": "2023-01-01",
        "MNEMO_MARKETS": "spot,cm",
    }
    s = load_settings(REPO / "mnemo.yaml", env=env)
    assert s.data_root == "s3://bucket/mnemo" and s.source.kind == "mirror" and s.mirror_dir == "/mnt/binance"
    assert s.start_date == date(2023, 1, 1) and list(s.markets) == ["spot", "cm"]


def test_every_key_has_an_environment_variable():
    env = {
        "MNEMO_SOURCE__HTTP__TIMEOUT_SECONDS": "7.5",
        "MNEMO_SOURCE__HTTP__LISTING_TTL_SECONDS": "0",
        "MNEMO_SOURCE__SYNTHETIC__SEED": "11",
        "MNEMO_GRIDS__INTERVALS": '["5s","1m"]',
        "MNEMO_CACHE_DIR": "/tmp/c",
        "MNEMO_AUTOMATION": "off",
        "MNEMO_source__kind": "http",
    }
    s = load_settings(REPO / "mnemo.yaml", env=env)
    assert s.source.http.timeout_seconds == 7.5 and s.source.http.listing_ttl_seconds == 0
    assert s.source.synthetic.seed == 11 and s.grids.intervals == ("5s", "1m") and s.cache_dir == "/tmp/c"
    assert s.automation.enabled is False and s.source.kind == "http"
    # the file's other keys stay
    assert s.source.http.retries == 4 and s.markets["spot"].pegs == ("USDT", "USDC")


def test_mnemo_config_env_points_at_a_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_root: /x\nmarkets:\n  spot:\n    pegs: [FDUSD]\ngrids:\n  intervals: [5s, 1m]\n")
    s = load_settings(env={"MNEMO_CONFIG": str(cfg)})
    assert s.data_root == "/x" and s.markets["spot"].pegs == ("FDUSD",) and s.grids.intervals == ("5s", "1m")
    assert s.mirror_dir == "/x/archive"


FUTURE = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    "text,line",
    [
        (
            "grids:\n  intervals: [7m]\n",
            "c.yaml: grids.intervals[0]: grid interval '7m' does not divide one day exactly (86400s is not a multiple of 420s); "
            "allowed: a polars duration that divides one day, such as 1s, 5s",
        ),
        ("grids:\n  intervals: [5s, 10min]\n", "c.yaml: grids.intervals[1]: cannot parse interval '10min'"),
        ("grids:\n  intervals: [5s, 10min]\n", "did you mean '10m'?"),
        ("markets:\n  futures:\n    pegs: [USDT]\n", "c.yaml: markets.futures: unknown market 'futures'; allowed: spot, um, cm"),
        ("markets:\n  spto:\n    pegs: [USDT]\n", "c.yaml: markets.spto: unknown market 'spto'; allowed: spot, um, cm; did you mean 'spot'?"),
        (
            "markets:\n  spot:\n    pegs: [usdt]\n",
            "c.yaml: markets.spot.pegs: peg 'usdt' is not an upper-case asset name; allowed: e.g. USDT, USDC, FDUSD; did you mean 'USDT'?",
        ),
        ("source:\n  kind: ftp\n", "c.yaml: source.kind: unknown kind 'ftp'; allowed: synthetic, http, mirror"),
        ("source:\n  kind: synthetc\n", "c.yaml: source.kind: unknown kind 'synthetc'; allowed: synthetic, http, mirror; did you mean 'synthetic'?"),
        ("grids:\n  intervals: [10m]\n", "c.yaml: returns.grid_interval: '5s' is not one of grids.intervals; allowed: 10m"),
        ("bogus: 1\n", "c.yaml: bogus: unknown key; allowed: data_root, cache_dir, start_date, source, markets"),
        (
            "source:\n  http:\n    timeout: 3\n",
            "c.yaml: source.http.timeout: unknown key; allowed: base_url, listing_url, retries, backoff_seconds, max_backoff_seconds, timeout_seconds, deadline_seconds, listing_ttl_seconds, revalidate_seconds; did you mean 'timeout_seconds'?",
        ),
        (
            "source:\n  synthtic:\n    seed: 1\n",
            "c.yaml: source.synthtic: unknown key; allowed: kind, mirror_dir, http, synthetic; did you mean 'synthetic'?",
        ),
        ("markets:\n  spot:\n    peggs: [USDT]\n", "c.yaml: markets.spot.peggs: unknown key; allowed: pegs, contracts; did you mean 'pegs'?"),
        (f"start_date: {FUTURE}\n", f"c.yaml: start_date: {FUTURE} is in the future (today is"),
        (f"source:\n  synthetic:\n    start: {FUTURE}\n", f"c.yaml: source.synthetic.start: {FUTURE} is in the future"),
        ("source:\n  mirror_dir: s3://bucket/archive\n", "c.yaml: source.mirror_dir: 's3://bucket/archive' is not a local folder"),
        ("source:\n  http:\n    base_url: ftp://x/\n", "c.yaml: source.http.base_url: 'ftp://x/' is not an http(s) URL"),
        ("source:\n  http:\n    retries: -1\n", "c.yaml: source.http.retries: Input should be greater than or equal to 0 (got -1)"),
    ],
)
def test_invalid_configuration_is_one_clear_line(tmp_path, text, line):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    msg = str(info.value)
    assert "\n" not in msg and str(cfg) in msg
    assert line in msg


@pytest.mark.parametrize(
    "env,line",
    [
        ({"MNEMO_SOURCE": "htp"}, "MNEMO_SOURCE: source.kind: unknown kind 'htp'; allowed: synthetic, http, mirror; did you mean 'http'?"),
        ({"MNEMO_SOURCE__HTTP__RETRIES": "x"}, "MNEMO_SOURCE__HTTP__RETRIES: source.http.retries: Input should be a valid integer"),
        ({"MNEMO_SOURCE__HTTP__TIMEOUT": "3"}, "MNEMO_SOURCE__HTTP__TIMEOUT: source.http.timeout: unknown key; allowed: base_url"),
        ({"MNEMO_GRIDS__INTERVALS": "5s"}, "MNEMO_GRIDS__INTERVALS: '5s' does not parse"),
        ({"MNEMO_MARKETS": "spto"}, "MNEMO_MARKETS: spto not configured; allowed: spot, um, cm; did you mean 'spot'?"),
        ({"MNEMO_AUTOMATION": "maybe"}, "MNEMO_AUTOMATION: 'maybe' is not a switch; allowed: on, off"),
        ({"MNEMO_START_DATE": FUTURE}, f"MNEMO_START_DATE: start_date: {FUTURE} is in the future"),
    ],
)
def test_invalid_environment_names_the_variable(env, line):
    with pytest.raises(ConfigError) as info:
        load_settings(REPO / "mnemo.yaml", env=env)
    assert line in str(info.value) and "\n" not in str(info.value)


def test_unknown_market_in_env():
    with pytest.raises(ValueError, match="MNEMO_MARKETS"):
        load_settings(REPO / "mnemo.yaml", env={"MNEMO_MARKETS": "spot,options"})


def test_settings_model_still_raises_validation_errors():
    with pytest.raises(ValidationError):
        Settings(source={"kind": "ftp"})


# ---------------------------------------------------------------- derived paths


def test_derived_paths_follow_a_local_root(tmp_path):
    s = Settings(data_root=str(tmp_path / "store"))
    assert s.local_root == str(tmp_path / "store")
    assert s.mirror_dir == f"{tmp_path}/store/archive"
    assert s.synthetic_dir == f"{tmp_path}/store/archive-synthetic/seed7-pairs50-tpd200000-from2024-12-01"
    assert Settings(data_root=f"file://{tmp_path}/store").mirror_dir == f"{tmp_path}/store/archive"


def test_object_store_root_uses_the_local_cache_never_a_scheme_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    s = load_settings(REPO / "mnemo.yaml", env={"MNEMO_DATA_ROOT": "s3://bucket/prefix/mnemo", "MNEMO_CACHE_DIR": str(cache)})
    for path in (s.mirror_dir, s.synthetic_dir):
        assert path.startswith(f"{cache}/roots/bucket_prefix_mnemo-")
        assert "s3:" not in path and "://" not in path
    other = Settings(data_root="gs://bucket/prefix/mnemo", cache_dir=str(cache))
    assert other.local_root != s.local_root  # one folder per root
    # building the sources and fetching writes below the cache, nothing in the working directory
    small = s.model_copy(update={"source": s.source.model_copy(update={"synthetic": SyntheticSettings(n_pairs=4, trades_per_day=500)})})
    small = Settings.model_validate(small.model_dump())
    source = ArchiveResource.from_settings(small).source()
    got = source.fetch("spot", source.list_pairs("spot")[0], date(2024, 12, 2))
    assert got.path.is_relative_to(cache)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    http = source_from_settings(s.model_copy(update={"source": s.source.model_copy(update={"kind": "http"})}))
    assert isinstance(http, HttpArchive) and http.mirror_dir.is_relative_to(cache)


def test_default_cache_dir(tmp_path):
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mnemo_assets"
    assert default_cache_dir({}) == Path("~/.cache/mnemo_assets").expanduser()
    s = Settings(data_root="s3://b/p")
    assert s.local_root.startswith(str(default_cache_dir()))


# ---------------------------------------------------------------- resources from settings


def test_archive_resource_is_built_from_the_settings(tmp_path):
    base = Settings(data_root=str(tmp_path))
    syn = ArchiveResource.from_settings(
        base.model_copy(
            update={
                "source": base.source.model_copy(
                    update={"synthetic": SyntheticSettings(seed=3, n_pairs=5, trades_per_day=1000, start=date(2024, 12, 5))}
                )
            }
        )
    )
    source = syn.source()
    assert isinstance(source, SyntheticArchive) and syn.kind == "synthetic"
    assert (source.seed, source.n_pairs, source.trades_per_day, source.start) == (3, 5, 1000, date(2024, 12, 5))
    assert source.cache_dir == tmp_path / "archive-synthetic" / "seed3-pairs5-tpd1000-from2024-12-05"
    assert syn.source() is source  # one source per resource: listings cached within a run

    http_settings = base.source.model_copy(update={"kind": "http", "http": HttpSettings(timeout_seconds=5, deadline_seconds=20)})
    http = ArchiveResource.from_settings(base.model_copy(update={"source": http_settings})).source()
    assert isinstance(http, HttpArchive) and (http.timeout, http.deadline) == (5, 20)
    assert http.mirror_dir == tmp_path / "archive"

    mirror = ArchiveResource.from_settings(
        base.model_copy(update={"source": base.source.model_copy(update={"kind": "mirror", "mirror_dir": str(tmp_path / "m")})})
    ).source()
    assert isinstance(mirror, LocalMirror) and mirror.root == tmp_path / "m"


def test_missing_mirror_folder_is_named(tmp_path):
    from mnemo_assets.binance.trades import plan_day

    source = LocalMirror(tmp_path / "nope")
    with pytest.raises(Exception, match=rf"mirror folder {tmp_path}/nope does not exist"):
        plan_day(source, "spot", ["USDT"], date(2024, 12, 2))


def test_intervals():
    assert to_timedelta("1h30m") == timedelta(minutes=90)
    assert interval_name(timedelta(seconds=300)) == "5m" and interval_name("4s") == "4s"
    assert day_interval("10m") == timedelta(minutes=10)
    import polars as pl

    assert to_timedelta(pl.lit("30s")) == timedelta(seconds=30)
    for bad in ("7m", "0s", "abc", "5x"):
        with pytest.raises(ValueError):
            day_interval(bad)
