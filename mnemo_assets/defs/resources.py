"""Resources: the archive source and the parquet IO manager, built from the settings.

Every default lives in :mod:`mnemo_assets.config`; the resources hold what the settings say
(and the paths derived from the data root), nothing of their own.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from mnemo_assets.binance.archive import ArchiveSource, open_source
from mnemo_assets.config import Settings, SourceSettings
from mnemo_assets.storage.io_manager import HiveParquetIOManager


class ArchiveResource(ConfigurableResource):
    """Where archive files come from: ``synthetic`` (default), ``http`` or ``mirror``.

    Build it with :meth:`from_settings`; ``source`` is the configuration's ``source:`` section
    as JSON, ``mirror_dir`` and ``synthetic_dir`` the paths derived from the data root.
    """

    source_json: str
    mirror_dir: str
    synthetic_dir: str

    _source: ArchiveSource | None = PrivateAttr(default=None)

    @property
    def settings(self) -> SourceSettings:
        """The ``source:`` section this resource was built from."""
        return SourceSettings.model_validate_json(self.source_json)

    @property
    def kind(self) -> str:
        return self.settings.kind

    def source(self) -> ArchiveSource:
        """The archive source (one per resource instance, so listings are cached within a run)."""
        if self._source is None:
            self._source = open_source(self.settings, self.mirror_dir, self.synthetic_dir)
        return self._source

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveResource:
        return cls(
            source_json=settings.source.model_dump_json(),
            mirror_dir=settings.mirror_dir,
            synthetic_dir=settings.synthetic_dir,
        )


class StoreResource(ConfigurableResource):
    """The parquet store's root, for assets that read beyond their declared inputs (a grid's
    stale marks from before the returns window) and stage their own partitions (in
    ``staging_dir``, see :attr:`~mnemo_assets.config.Settings.staging_dir`)."""

    base_dir: str
    staging_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreResource:
        return cls(base_dir=settings.data_root, staging_dir=settings.staging_dir)


def io_manager_from_settings(settings: Settings) -> HiveParquetIOManager:
    return HiveParquetIOManager(base_dir=settings.data_root, staging_dir=settings.staging_dir)
