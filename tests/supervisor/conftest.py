import pytest


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"
