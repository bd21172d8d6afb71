"""One settings model: a YAML file plus environment overrides, validated early.

Where the file comes from: ``$MNEMO_CONFIG``, else ``./mnemo.yaml`` in the working directory,
else the built-in defaults (the repository's ``mnemo.yaml`` spells them out; every default is
written once, in the models below, and the sources and the Dagster resource take theirs from
here). Environment variables override the file. Every key has one, built by
``pydantic-settings``: ``MNEMO_`` + the key path joined by ``__`` (``MNEMO_SOURCE__HTTP__TIMEOUT_SECONDS=30``,
lists as JSON: ``MNEMO_GRIDS__INTERVALS='["5s","1m"]'``). Short names kept from earlier versions:

=====================  ==========================================================
``MNEMO_CONFIG``        path of the YAML file
``MNEMO_DATA_ROOT``     root of the parquet store (local path or ``s3://...``)
``MNEMO_CACHE_DIR``     local cache for what an object-store root cannot hold: staged
                        partitions, snapshots of objects read (``objects/``), archive
                        downloads (default ``$XDG_CACHE_HOME/mnemo_assets`` or ``~/.cache/mnemo_assets``)
``MNEMO_SNAPSHOT_CACHE_GB``  budget of ``{cache}/objects`` (default 20; least recently used first)
``MNEMO_SOURCE``        ``synthetic`` | ``http`` | ``mirror`` (= ``source.kind``)
``MNEMO_MIRROR_DIR``    archive mirror directory (= ``source.mirror_dir``)
``MNEMO_START_DATE``    first daily partition, ``YYYY-MM-DD``
``MNEMO_MARKETS``       comma-separated subset of the configured markets
``MNEMO_AUTOMATION``    ``on`` / ``off``: the daily automation sensor's default status
=====================  ==========================================================

A configuration error is a :class:`ConfigError`: one line naming the file (or the variable),
the key, what is allowed, and a "did you mean" where one is close.

Derived paths follow the data root: on a local root the HTTP source's download cache is
``{data_root}/archive``, the synthetic archive's cache ``{data_root}/archive-synthetic/...``
and staged partitions ``{data_root}/.staging``; on an object-store root (``s3://``, ``gs://``,
...) all three live under the local cache directory (``{cache_dir}/roots/{bucket-prefix}-{hash}/``:
``archive``, ``archive-synthetic``, ``.staging``), never in a folder named after the URL.
Object-store credentials and endpoint come from the usual variables of the store's SDK
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), read alike by s3fs (botocore) and polars (object_store).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import typing
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import EnvSettingsSource, SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from mnemo_assets.intervals import day_interval, interval_name
from mnemo_assets.markets import MARKETS

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration problem, in one line: where, which key, what is allowed."""


def _today() -> date:
    return datetime.now(UTC).date()


def _did_you_mean(value: object, allowed: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_COMMON_INTERVALS = ("1s", "5s", "10s", "15s", "30s", "1m", "5m", "10m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
_UNIT_WORDS = {
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "day": "d",
    "days": "d",
}


def _interval(what: str):
    """An after-validator: a duration string that divides one day, normalised (``"300s"`` → ``"5m"``)."""

    def check(value: str) -> str:
        try:
            return interval_name(day_interval(value, what))
        except (ValueError, TypeError) as exc:
            hint = ""
            match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]+)\s*", str(value))
            if match and match.group(2).lower() in _UNIT_WORDS:
                hint = f"; did you mean '{match.group(1)}{_UNIT_WORDS[match.group(2).lower()]}'?"
            raise ValueError(f"{exc}; allowed: a polars duration that divides one day, such as {', '.join(_COMMON_INTERVALS)}{hint}") from None

    return AfterValidator(check)


def _not_future(what: str):
    def check(value: date) -> date:
        today = _today()
        if value > today:
            raise ValueError(f"{value} is in the future (today is {today}, UTC); allowed: a {what} up to today")
        return value

    return AfterValidator(check)


GridInterval = Annotated[str, _interval("grid interval")]
ReturnsInterval = Annotated[str, _interval("returns interval")]
MetadataInterval = Annotated[str, _interval("metadata interval")]
PastDate = Annotated[date, _not_future("day")]
Interval = str


def is_local_root(root: str) -> bool:
    """Whether a data root is a local folder (a path or ``file://``) rather than an object store."""
    scheme = root.split("://", 1)[0].lower() if "://" in root else ""
    return scheme in ("", "file")


def _local_path(root: str) -> str:
    return root[len("file://") :] if root.lower().startswith("file://") else root


def default_cache_dir(env: typing.Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/mnemo_assets``, else ``~/.cache/mnemo_assets``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base).expanduser() / "mnemo_assets"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/?#\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL; allowed: http://host[:port]/path or https://...")
    return value


class HttpSettings(_Model):
    """The HTTP archive (data.binance.vision) and its S3 listing."""

    base_url: Annotated[str, AfterValidator(_http_url)] = "https://data.binance.vision/"
    listing_url: Annotated[str, AfterValidator(_http_url)] = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
    #: extra attempts after the first for 429/5xx, dropped connections, timeouts, truncated bodies
    retries: int = Field(default=4, ge=0, le=50)
    #: first wait between attempts (doubles each time, with jitter; Retry-After honoured)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    #: one request, connect to last byte (a server that drips bytes fails after this)
    timeout_seconds: float = Field(default=60.0, gt=0)
    #: one file (or listing page), every attempt and wait included
    deadline_seconds: float = Field(default=600.0, gt=0)
    #: listings are reused this long (memory and ``{mirror}/.listings``); 0 disables the cache
    listing_ttl_seconds: float = Field(default=3600.0, ge=0)
    #: a cached file's ``.CHECKSUM`` is re-checked (a conditional request) when older than this; 0 = every fetch
    revalidate_seconds: float = Field(default=86400.0, ge=0)


class SyntheticSettings(_Model):
    """The deterministic synthetic archive (the default, offline source)."""

    seed: int = 7
    n_pairs: int = Field(default=50, ge=1)
    #: expected spot trades per day over all pairs (USD-M: 1/2 of it, COIN-M: 1/20)
    trades_per_day: int = Field(default=200_000, ge=1)
    #: first day the synthetic archive has files
    start: PastDate = date(2024, 12, 1)

    @field_validator("start")
    @classmethod
    def _zip_epoch(cls, value: date) -> date:
        if value < date(1980, 1, 2):
            raise ValueError(f"{value} is before 1980-01-02; allowed: a day from 1980-01-02 (zip dates) up to today")
        return value


class SourceSettings(_Model):
    kind: Literal["synthetic", "http", "mirror"] = "synthetic"
    #: archive mirror: read by ``mirror``, download cache of ``http``; default ``{data_root}/archive``
    mirror_dir: str | None = None
    http: HttpSettings = HttpSettings()
    synthetic: SyntheticSettings = SyntheticSettings()

    @field_validator("mirror_dir")
    @classmethod
    def _local(cls, value: str | None) -> str | None:
        if value is not None and not is_local_root(value):
            raise ValueError(f"{value!r} is not a local folder; allowed: a local path (archive zips are read from local disk)")
        return _local_path(value) if value is not None else None


class MarketSettings(_Model):
    pegs: tuple[str, ...]
    #: futures: ``perpetual`` (default) or ``all`` (delivery contracts keep their expiry in the symbol)
    contracts: Literal["perpetual", "all"] = "perpetual"

    @field_validator("pegs")
    @classmethod
    def _pegs(cls, pegs: tuple[str, ...]) -> tuple[str, ...]:
        if not pegs:
            raise ValueError("a market needs at least one peg; allowed: upper-case asset names such as USDT, USDC, USD")
        for peg in pegs:
            if not peg.isalnum() or not peg.isupper():
                hint = f"; did you mean {peg.upper()!r}?" if peg.isalnum() else ""
                raise ValueError(f"peg {peg!r} is not an upper-case asset name; allowed: e.g. USDT, USDC, FDUSD{hint}")
        return tuple(dict.fromkeys(pegs))


def _default_markets() -> dict[str, MarketSettings]:
    return {
        "spot": MarketSettings(pegs=("USDT", "USDC")),
        "um": MarketSettings(pegs=("USDT", "USDC")),
        "cm": MarketSettings(pegs=("USD",)),
    }


class GridSettings(_Model):
    intervals: tuple[GridInterval, ...] = ("5s", "10m")

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(values))


class ReturnsSettings(_Model):
    intervals: tuple[ReturnsInterval, ...] = ("10m",)
    #: the grid the marks are taken from
    grid_interval: GridInterval = "5s"

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(values))


class MetadataSettings(_Model):
    intervals: tuple[MetadataInterval, ...] = ("1h",)
    grid_interval: GridInterval = "5s"
    returns_interval: ReturnsInterval = "10m"
    #: ``module:function`` returning a MetadataSpec, called as ``function(returns_interval, interval)``
    spec: str = "mnemo_assets.metadata:default_metadata"

    @field_validator("intervals")
    @classmethod
    def _intervals(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(values))

    @field_validator("spec")
    @classmethod
    def _spec(cls, value: str) -> str:
        if ":" not in value:
            raise ValueError(f"{value!r} is not 'module:function'; allowed: e.g. mnemo_assets.metadata:default_metadata")
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
    #: stored days whose archive checksums are re-checked every hour (re-published days are re-ingested)
    recheck_days: int = Field(default=3, ge=0)


class ReconciliationSettings(_Model):
    """Reconciling every ingested pair-day with the exchange's own 1m klines."""

    #: fetch each pair-day's klines file and reconcile (ledger ``klines_*`` columns, check
    #: ``reconciles_with_klines``); off: neither
    enabled: bool = True
    #: a pair-day that does not reconcile (or has no readable klines) fails the check as an ERROR
    #: and nothing of the day is published; false: it is published as ``degraded`` (a WARN)
    blocking: bool = False


class BackfillSettings(_Model):
    #: days per run in a backfill (the seed's ``days_per_batch``)
    days_per_batch: int = Field(default=30, ge=1)


Market = Literal["spot", "um", "cm"]


class Settings(_Model):
    """The whole configuration. Build with :func:`load_settings`."""

    data_root: str = "./data"
    #: local cache for what an object-store ``data_root`` cannot hold (archive downloads, the
    #: synthetic archive); default ``$XDG_CACHE_HOME/mnemo_assets`` or ``~/.cache/mnemo_assets``
    cache_dir: str | None = None
    start_date: PastDate = date(2024, 12, 1)
    source: SourceSettings = SourceSettings()
    markets: dict[Market, MarketSettings] = Field(default_factory=_default_markets)
    grids: GridSettings = GridSettings()
    returns: ReturnsSettings = ReturnsSettings()
    metadata: MetadataSettings = MetadataSettings()
    backfill: BackfillSettings = BackfillSettings()
    automation: AutomationSettings = AutomationSettings()
    reconciliation: ReconciliationSettings = ReconciliationSettings()

    @field_validator("markets")
    @classmethod
    def _markets(cls, markets: dict[str, MarketSettings]) -> dict[str, MarketSettings]:
        if not markets:
            raise ValueError(f"no market configured; allowed: one or more of {', '.join(MARKETS)}")
        return {m: markets[m] for m in MARKETS if m in markets}

    @field_validator("cache_dir")
    @classmethod
    def _cache_local(cls, value: str | None) -> str | None:
        if value is not None and not is_local_root(value):
            raise ValueError(f"{value!r} is not a local folder; allowed: a local path")
        return _local_path(value) if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.returns.grid_interval not in self.grids.intervals and self.returns.intervals:
            raise ValueError(
                f"returns.grid_interval: {self.returns.grid_interval!r} is not one of grids.intervals; allowed: {', '.join(self.grids.intervals)}"
            )
        if self.metadata.intervals and self.metadata.grid_interval not in self.grids.intervals:
            raise ValueError(
                f"metadata.grid_interval: {self.metadata.grid_interval!r} is not one of grids.intervals; allowed: {', '.join(self.grids.intervals)}"
            )
        if self.metadata.intervals and self.metadata.returns_interval not in self.returns.intervals:
            raise ValueError(
                f"metadata.returns_interval: {self.metadata.returns_interval!r} is not one of returns.intervals; "
                f"allowed: {', '.join(self.returns.intervals)}"
            )
        return self

    # ------------------------------------------------------------------ derived paths

    @cached_property
    def local_root(self) -> str:
        """Where everything derived from ``data_root`` that must be on local disk lives:
        ``data_root`` itself when it is local, else a folder of the local cache named after the
        root's bucket and prefix plus a hash (``{cache_dir}/roots/bucket_mnemo-1a2b3c4d``)."""
        if is_local_root(self.data_root):
            return _local_path(self.data_root).rstrip("/") or "/"
        cache = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        rest = self.data_root.split("://", 1)[1]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", rest).strip("._-")[:60] or "root"
        digest = hashlib.sha256(self.data_root.encode()).hexdigest()[:8]
        return str(cache / "roots" / f"{slug}-{digest}")

    @cached_property
    def staging_dir(self) -> str | None:
        """Where partitions are staged before they are published: ``None`` on a local root
        (``{data_root}/.staging``, the same filesystem, so a publish is a rename); on an
        object-store root a local folder, ``{local_root}/.staging``, whose files are PUT and
        removed (a failed run's leftovers are removed after 6 hours)."""
        return None if is_local_root(self.data_root) else f"{self.local_root}/.staging"

    @cached_property
    def mirror_dir(self) -> str:
        """Archive mirror directory: ``source.mirror_dir``, else ``{local_root}/archive``."""
        return self.source.mirror_dir or f"{self.local_root}/archive"

    @cached_property
    def synthetic_dir(self) -> str:
        """The synthetic archive's cache, one folder per configuration (editing the
        configuration never meets files of another): ``{local_root}/archive-synthetic/seed7-...``."""
        syn = self.source.synthetic
        folder = f"seed{syn.seed}-pairs{syn.n_pairs}-tpd{syn.trades_per_day}-from{syn.start.isoformat()}"
        return f"{self.local_root}/archive-synthetic/{folder}"


def _read_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping at the top level, got {type(data).__name__}")
    return data


def config_path(env: typing.Mapping[str, str] | None = None) -> Path | None:
    """The configuration file in force, or ``None`` for the built-in defaults."""
    env = os.environ if env is None else env
    if env.get("MNEMO_CONFIG"):
        path = Path(env["MNEMO_CONFIG"]).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"MNEMO_CONFIG points at {path}, which does not exist")
        return path
    local = Path.cwd() / "mnemo.yaml"
    return local if local.exists() else None


# ------------------------------------------------------------------ environment

#: short variable names and the key each sets (MNEMO_MARKETS and MNEMO_CONFIG are handled apart)
_LEGACY_ENV: dict[str, tuple[str, ...]] = {
    "MNEMO_SOURCE": ("source", "kind"),
    "MNEMO_MIRROR_DIR": ("source", "mirror_dir"),
    "MNEMO_AUTOMATION": ("automation", "enabled"),
}
_NOT_KEYS = {"MNEMO_CONFIG", "MNEMO_MARKETS"}


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (not only ``os.environ``)."""

    def __init__(self, environ: typing.Mapping[str, str]):
        self._environ = dict(environ)
        super().__init__(Settings, case_sensitive=False, env_prefix="MNEMO_", env_nested_delimiter="__", env_ignore_empty=True)

    def _load_env_vars(self):
        return parse_env_vars(self._environ, False, True, None)


def _env_overrides(env: typing.Mapping[str, str]) -> tuple[dict, dict[tuple[str, ...], str]]:
    """``(nested overrides, {key path: variable})`` from ``MNEMO_*`` variables."""
    overrides: dict = {}
    origins: dict[tuple[str, ...], str] = {}
    ours = {k.upper(): v for k, v in env.items() if k.upper().startswith("MNEMO_") and v != ""}
    generic = {k: v for k, v in ours.items() if k not in _LEGACY_ENV and k not in _NOT_KEYS}
    try:
        found = _EnvSource(generic)()
    except SettingsError:
        for name, value in generic.items():  # name the variable that does not parse
            try:
                _EnvSource({name: value})()
            except SettingsError as exc:
                cause = exc.__cause__ or exc
                raise ConfigError(
                    f"{name}: {value!r} does not parse ({' '.join(str(cause).split())}); allowed: JSON for lists "
                    f'and mappings, e.g. MNEMO_GRIDS__INTERVALS=\'["5s","1m"]\''
                ) from None
        raise
    _merge(overrides, found)

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, (*path, str(k)))
        else:
            origins[path] = "MNEMO_" + "__".join(path).upper()

    walk(found, ())
    used = {"MNEMO_" + "__".join(p).upper() for p in origins}
    for name in generic:
        if name not in used and not any(u.startswith(name + "__") for u in used):
            top = ["MNEMO_" + f.upper() for f in Settings.model_fields] + list(_LEGACY_ENV) + sorted(_NOT_KEYS)
            log.debug("ignoring %s: not a setting%s", name, _did_you_mean(name, top))
    for name, path in _LEGACY_ENV.items():
        if name in ours:
            value: Any = ours[name]
            if name == "MNEMO_AUTOMATION":
                word = value.strip().lower()
                if word not in ("on", "off", "true", "false", "1", "0"):
                    raise ConfigError(f"MNEMO_AUTOMATION: {value!r} is not a switch; allowed: on, off")
                value = word in ("on", "true", "1")
            _merge(overrides, _nest(path, value))
            origins[path] = name
    return overrides, origins


def _nest(path: tuple[str, ...], value: Any) -> dict:
    node: Any = value
    for key in reversed(path):
        node = {key: node}
    return node


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


# ------------------------------------------------------------------ error messages


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class holding the key at ``loc`` (``None`` if not a model)."""
    model: Any = Settings
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        origin = typing.get_origin(ann)
        if origin is dict:
            ann = typing.get_args(ann)[1]
            model = ("dict", ann)
            continue
        model = ann
        if isinstance(model, tuple):
            model = model[1]
    if isinstance(model, tuple):
        model = model[1]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _container_at(loc: tuple) -> type[BaseModel] | None:
    """The model whose field list an unknown key at ``loc`` is checked against."""
    parent = loc[:-1]
    # a key below a market name: markets.spot.<key>
    if len(parent) >= 2 and parent[0] == "markets":
        return MarketSettings
    return _model_at(parent) if parent else Settings


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _origin(loc: tuple, origins: dict[tuple[str, ...], str]) -> str | None:
    keys = tuple(str(p) for p in loc if not isinstance(p, int) and p != "[key]")
    if not keys:
        return None
    for n in range(len(keys), 0, -1):
        if keys[:n] in origins:
            return origins[keys[:n]]
    for path, name in origins.items():  # a variable that set a whole sub-tree below this key
        if path[: len(keys)] == keys:
            return name
    return None


def _describe(error: dict) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind == "extra_forbidden":
        model = _container_at(loc)
        allowed = list(model.model_fields) if model else []
        return f"unknown key; allowed: {', '.join(allowed)}{_did_you_mean(loc[-1], allowed)}"
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        allowed = re.findall(r"'([^']*)'", expected)
        what = "market" if loc and loc[-1] == "[key]" else f"{loc[-1]}" if loc else "value"
        return f"unknown {what} {value!r}; allowed: {', '.join(allowed)}{_did_you_mean(value, allowed)}"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    shown = "" if value is None or isinstance(value, dict) else f" (got {value!r})"
    return f"{error['msg']}{shown}"


def _one_line(exc: ValidationError, where: str, origins: dict[tuple[str, ...], str]) -> str:
    rank = {"extra_forbidden": 0, "literal_error": 1, "value_error": 2, "missing": 9}
    errors = sorted(exc.errors(), key=lambda e: rank.get(e["type"], 5))
    first = errors[0]
    loc = tuple(first["loc"])
    source = _origin(loc, origins) or where
    message = _describe(first)
    key = _dotted(loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    text = f"{source}: {key}: {message}{more}" if key else f"{source}: {message}{more}"
    return " ".join(text.split())


def load_settings(path: str | Path | None = None, env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file (see module docs) and apply environment overrides.

    Raises :class:`ConfigError` (a ``ValueError``) with one line naming the file or variable,
    the key, what is allowed and, where one is close, what was probably meant.

    >>> s = load_settings(env={"MNEMO_SOURCE": "synthetic", "MNEMO_DATA_ROOT": "/tmp/x"})
    >>> s.source.kind, s.data_root
    ('synthetic', '/tmp/x')
    """
    env = dict(os.environ if env is None else env)
    file = Path(path) if path is not None else config_path(env)
    raw: dict = _read_file(file) if file is not None else {}
    overrides, origins = _env_overrides(env)
    merged = _merge(raw, overrides)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, str(file) if file is not None else "settings", origins)) from None
    wanted_text = env.get("MNEMO_MARKETS", "").strip()
    if wanted_text:
        wanted = [m.strip() for m in wanted_text.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in settings.markets]
        if unknown:
            raise ConfigError(
                f"MNEMO_MARKETS: {', '.join(unknown)} not configured; allowed: {', '.join(settings.markets)}"
                f"{_did_you_mean(unknown[0], settings.markets)}"
            )
        settings = settings.model_copy(update={"markets": {m: settings.markets[m] for m in settings.markets if m in wanted}})
    return settings
