import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import data, utils` under plain `pytest`

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared offline copy of the benchmarks (../shared/data next to the repository); skip if absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"no local benchmark data at {DATA_DIR}")
    return DATA_DIR
