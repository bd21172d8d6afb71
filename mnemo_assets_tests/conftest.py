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
