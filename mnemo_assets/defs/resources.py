"""Resources: the archive source and the parquet IO manager, built from the settings."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from mnemo_assets.binance.archive import ArchiveSource, LocalMirror
from mnemo_assets.config import Settings
from mnemo_assets.storage.io_manager import HiveParquetIOManager


class ArchiveResource(ConfigurableResource):
    """Where trade archives come from: ``synthetic`` (default), ``http`` or ``mirror``."""

    kind: str = "synthetic"
    mirror_dir: str = "./data/archive"
    synthetic_dir: str = "./data/archive-synthetic"
    base_url: str = "https://data.binance.vision/"
    listing_url: str = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
    retries: int = 4
    backoff_seconds: float = 0.5
    timeout_seconds: float = 60.0
    seed: int = 7
    n_pairs: int = 50
    trades_per_day: int = 200_000
    synthetic_start: str = "2024-12-01"

    _source: ArchiveSource | None = PrivateAttr(default=None)

    def source(self) -> ArchiveSource:
        """The archive source (one per resource instance, so listings are cached within a run)."""
        if self._source is None:
            self._source = self._build()
        return self._source

    def _build(self) -> ArchiveSource:
        if self.kind == "mirror":
            return LocalMirror(self.mirror_dir)
        if self.kind == "http":
            from mnemo_assets.binance.http_archive import HttpArchive

            return HttpArchive(
                Path(self.mirror_dir), base_url=self.base_url, listing_url=self.listing_url,
                retries=self.retries, backoff=self.backoff_seconds, timeout=self.timeout_seconds,
            )
        if self.kind == "synthetic":
            from datetime import date

            from mnemo_assets.binance.synthetic import SyntheticArchive

            # one cache folder per configuration, so editing the config never meets stale zips
            folder = f"seed{self.seed}-pairs{self.n_pairs}-tpd{self.trades_per_day}-from{self.synthetic_start}"
            return SyntheticArchive(
                Path(self.synthetic_dir) / folder, seed=self.seed, n_pairs=self.n_pairs,
                trades_per_day=self.trades_per_day, start=date.fromisoformat(self.synthetic_start),
            )
        raise ValueError(f"unknown archive source {self.kind!r}: expected synthetic, http or mirror")

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveResource:
        src = settings.source
        return cls(
            kind=src.kind,
            mirror_dir=settings.mirror_dir,
            synthetic_dir=f"{settings.data_root.rstrip('/')}/archive-synthetic",
            base_url=src.http.base_url,
            listing_url=src.http.listing_url,
            retries=src.http.retries,
            backoff_seconds=src.http.backoff_seconds,
            timeout_seconds=src.http.timeout_seconds,
            seed=src.synthetic.seed,
            n_pairs=src.synthetic.n_pairs,
            trades_per_day=src.synthetic.trades_per_day,
            synthetic_start=src.synthetic.start.isoformat(),
        )


class StoreResource(ConfigurableResource):
    """The parquet store's root, for assets that read beyond their declared inputs (a grid's
    stale marks from before the returns window)."""

    base_dir: str


def io_manager_from_settings(settings: Settings) -> HiveParquetIOManager:
    return HiveParquetIOManager(base_dir=settings.data_root)
