"""One settings model: a YAML file plus environment overrides, validated early.

Where the file comes from: ``$MNEMO_CONFIG``, else ``./mnemo.yaml`` in the working directory,
else the built-in defaults (the repository's ``mnemo.yaml`` spells them out). Environment
variables override the file:

===================  ==========================================================
``MNEMO_CONFIG``      path of the YAML file
``MNEMO_DATA_ROOT``   root of the parquet store (local path or ``s3://...``)
``MNEMO_SOURCE``      ``synthetic`` | ``http`` | ``mirror``
``MNEMO_MIRROR_DIR``  archive mirror directory (``mirror`` source; ``http`` cache)
``MNEMO_START_DATE``  first daily partition, ``YYYY-MM-DD``
``MNEMO_MARKETS``     comma-separated subset of the configured markets
``MNEMO_AUTOMATION``  ``on`` / ``off``: the daily automation sensor's default status
===================  ==========================================================
"""

from __future__ import annotations

import os
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnemo_assets.intervals import day_interval, interval_name
from mnemo_assets.markets import MARKETS

Interval = str

class ConfigError(ValueError):
    """A configuration mistake, said in one line (file, key, allowed values)."""


#: environment variables that override the configuration file
ENV_OVERRIDES = ("MNEMO_DATA_ROOT", "MNEMO_SOURCE", "MNEMO_MIRROR_DIR", "MNEMO_START_DATE", "MNEMO_MARKETS", "MNEMO_AUTOMATION")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Model):
    base_url: str = "https://data.binance.vision/"
    listing_url: str = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
    retries: int = 4
    backoff_seconds: float = 0.5
    timeout_seconds: float = 60.0


class SyntheticSettings(_Model):
    seed: int = 7
    n_pairs: int = 50
    trades_per_day: int = 200_000
    #: first day the synthetic archive has files
    start: date = date(2024, 12, 1)


class SourceSettings(_Model):
    kind: Literal["synthetic", "http", "mirror"] = "synthetic"
    #: archive mirror: read by ``mirror``, download cache of ``http``; default ``{data_root}/archive``
    mirror_dir: str | None = None
    http: HttpSettings = HttpSettings()
    synthetic: SyntheticSettings = SyntheticSettings()


class MarketSettings(_Model):
    pegs: tuple[str, ...]
    #: futures: ``perpetual`` (default) or ``all`` (delivery contracts keep their expiry in the symbol)
    contracts: Literal["perpetual", "all"] = "perpetual"

    @field_validator("pegs")
    @classmethod
    def _pegs(cls, pegs: tuple[str, ...]) -> tuple[str, ...]:
        if not pegs:
            raise ValueError("a market needs at least one peg")
        for peg in pegs:
            if not peg.isalnum() or not peg.isupper():
                raise ValueError(f"peg {peg!r} must be an upper-case asset name such as USDT")
        return tuple(dict.fromkeys(pegs))


def _default_markets() -> dict[str, MarketSettings]:
    return {
        "spot": MarketSettings(pegs=("USDT", "USDC")),
        "um": MarketSettings(pegs=("USDT", "USDC")),
        "cm": MarketSettings(pegs=("USD",)),
    }


class GridSettings(_Model):
    intervals: tuple[Interval, ...] = ("5s", "10m")

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(interval_name(day_interval(v, "grid interval")) for v in values))


class ReturnsSettings(_Model):
    intervals: tuple[Interval, ...] = ("10m",)
    #: the grid the marks are taken from
    grid_interval: Interval = "5s"

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(interval_name(day_interval(v, "returns interval")) for v in values))

    @field_validator("grid_interval")
    @classmethod
    def _grid(cls, value: str) -> str:
        return interval_name(day_interval(value, "grid interval"))


class MetadataSettings(_Model):
    intervals: tuple[Interval, ...] = ("1h",)
    grid_interval: Interval = "5s"
    returns_interval: Interval = "10m"
    #: ``module:function`` returning a MetadataSpec, called as ``function(returns_interval, interval)``
    spec: str = "mnemo_assets.metadata:default_metadata"

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(interval_name(day_interval(v, "metadata interval")) for v in values))

    @field_validator("grid_interval", "returns_interval")
    @classmethod
    def _one(cls, value: str) -> str:
        return interval_name(day_interval(value))

    @field_validator("spec")
    @classmethod
    def _spec(cls, value: str) -> str:
        if ":" not in value:
            raise ValueError(f"metadata.spec {value!r} must be 'module:function'")
        return value

    def load_spec(self, interval: str):
        """The MetadataSpec for one metadata interval (imports ``spec``)."""
        import importlib

        module, _, name = self.spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"metadata.spec {self.spec!r} cannot be imported: {exc}") from exc
        return factory(self.returns_interval, interval)


class AutomationSettings(_Model):
    #: run the ``mnemo_daily`` automation sensor by default (``MNEMO_AUTOMATION=off`` to stop it)
    enabled: bool = True
    #: when to try the newest day of the archive while it is missing
    archive_cron: str = "15 * * * *"


class BackfillSettings(_Model):
    #: days per run in a backfill (the seed's ``days_per_batch``)
    days_per_batch: int = Field(default=30, ge=1)


class Settings(_Model):
    """The whole configuration. Build with :func:`load_settings`."""

    data_root: str = "./data"
    start_date: date = date(2024, 12, 1)
    source: SourceSettings = SourceSettings()
    markets: dict[str, MarketSettings] = Field(default_factory=_default_markets)
    grids: GridSettings = GridSettings()
    returns: ReturnsSettings = ReturnsSettings()
    metadata: MetadataSettings = MetadataSettings()
    backfill: BackfillSettings = BackfillSettings()
    automation: AutomationSettings = AutomationSettings()

    @field_validator("markets")
    @classmethod
    def _markets(cls, markets: dict[str, MarketSettings]) -> dict[str, MarketSettings]:
        for name in markets:
            if name not in MARKETS:
                raise ValueError(f"unknown market {name!r}: expected one of {', '.join(MARKETS)}")
        if not markets:
            raise ValueError("configure at least one market")
        return {m: markets[m] for m in MARKETS if m in markets}

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.returns.grid_interval not in self.grids.intervals and self.returns.intervals:
            raise ValueError(
                f"returns.grid_interval {self.returns.grid_interval!r} is not one of grids.intervals {list(self.grids.intervals)}"
            )
        if self.metadata.intervals and self.metadata.grid_interval not in self.grids.intervals:
            raise ValueError(
                f"metadata.grid_interval {self.metadata.grid_interval!r} is not one of grids.intervals {list(self.grids.intervals)}"
            )
        if self.metadata.intervals and self.metadata.returns_interval not in self.returns.intervals:
            raise ValueError(
                f"metadata.returns_interval {self.metadata.returns_interval!r} is not one of returns.intervals {list(self.returns.intervals)}"
            )
        return self

    @cached_property
    def mirror_dir(self) -> str:
        """Archive mirror directory (``source.mirror_dir`` or ``{data_root}/archive``)."""
        return self.source.mirror_dir or f"{self.data_root.rstrip('/')}/archive"


def _read_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the configuration must be a mapping at the top level")
    return data


def config_path(env: dict[str, str] | None = None) -> Path | None:
    """The configuration file in force, or ``None`` for the built-in defaults."""
    env = os.environ if env is None else env
    if env.get("MNEMO_CONFIG"):
        path = Path(env["MNEMO_CONFIG"]).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"MNEMO_CONFIG points at {path}, which does not exist")
        return path
    local = Path.cwd() / "mnemo.yaml"
    return local if local.exists() else None


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the configuration file (see module docs) and apply environment overrides.

    >>> s = load_settings(env={"MNEMO_SOURCE": "synthetic", "MNEMO_DATA_ROOT": "/tmp/x"})  # doctest: +SKIP
    """
    env = dict(os.environ if env is None else env)
    file = Path(path) if path is not None else config_path(env)
    raw: dict = _read_file(file) if file is not None else {}
    if env.get("MNEMO_DATA_ROOT"):
        raw["data_root"] = env["MNEMO_DATA_ROOT"]
    if env.get("MNEMO_START_DATE"):
        raw["start_date"] = env["MNEMO_START_DATE"]
    source = dict(raw.get("source") or {})
    if env.get("MNEMO_SOURCE"):
        source["kind"] = env["MNEMO_SOURCE"]
    if env.get("MNEMO_MIRROR_DIR"):
        source["mirror_dir"] = env["MNEMO_MIRROR_DIR"]
    if source:
        raw["source"] = source
    if env.get("MNEMO_AUTOMATION"):
        value = env["MNEMO_AUTOMATION"].strip().lower()
        if value not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"MNEMO_AUTOMATION={env['MNEMO_AUTOMATION']!r}: use on or off")
        raw["automation"] = {**(raw.get("automation") or {}), "enabled": value in ("on", "true", "1")}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        where = str(file) if file is not None else "the built-in defaults"
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None
    if env.get("MNEMO_MARKETS"):
        wanted = [m.strip() for m in env["MNEMO_MARKETS"].split(",") if m.strip()]
        unknown = [m for m in wanted if m not in settings.markets]
        if unknown:
            raise ValueError(f"MNEMO_MARKETS names {unknown}, not configured (configured: {list(settings.markets)})")
        settings = settings.model_copy(update={"markets": {m: settings.markets[m] for m in settings.markets if m in wanted}})
    return settings
