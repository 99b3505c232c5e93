import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import tidings  # noqa: E402
from helpers import NodeProcess  # noqa: E402


@pytest.fixture
def node():
    """An embedded node on a temporary data dir."""
    with tidings.Node() as n:
        yield n


@pytest.fixture(params=["embedded", "process"])
def api(request, tmp_path):
    """The API URL of a node: embedded in this process, or a `tidings node` process."""
    if request.param == "embedded":
        with tidings.Node(data_dir=tmp_path / "node") as n:
            yield n.api
    else:
        p = NodeProcess(tmp_path / "node")
        try:
            yield p.api
        finally:
            p.stop()


@pytest.fixture(autouse=True)
def no_env_defaults(monkeypatch):
    """Tests choose their node explicitly; a TIDINGS_API/TOKEN in the environment must not leak in."""
    monkeypatch.delenv("TIDINGS_API", raising=False)
    monkeypatch.delenv("TIDINGS_TOKEN", raising=False)
