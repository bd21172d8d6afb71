import os
import warnings
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REALDATA = FIXTURES / "realdata"

warnings.filterwarnings("ignore", module="dagster")


def realdata_files() -> list[tuple[Path, str]]:
    """Every realdata trades file with its market."""
    out = []
    for market, folder in (("spot", "spot/trades"), ("um", "futures/um/trades"), ("cm", "futures/cm/trades")):
        out += [(p, market) for p in sorted((REALDATA / folder).glob("*.csv"))]
    return out


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


# ----------------------------------------------------------------------------- object storage
@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """``moto_server`` (a real S3 HTTP endpoint) on a free loopback port for this test process."""
    from mnemo_assets_tests.s3_server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def use_s3(monkeypatch, server, cache_dir) -> None:
    """Point every client at ``server`` through the usual AWS variables (and nothing else)."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MNEMO_CACHE_DIR", str(cache_dir))
    s3fs.S3FileSystem.clear_instance_cache()


_buckets = iter(range(1, 10_000))


@pytest.fixture
def s3_root(moto_server, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the loopback S3 endpoint, the AWS variables set for it; the store root
    ``s3://{bucket}/mnemo``."""
    bucket = moto_server.create_bucket(f"mnemo-test-{os.getpid()}-{next(_buckets)}")
    use_s3(monkeypatch, moto_server, tmp_path / "cache")
    return f"s3://{bucket}/mnemo"
