"""A ``REDIS_URL`` naming a Redis Cluster node: detected, refused in one line.

Against a real local cluster (``tests/cluster.py``: 3 masters, 1 replica each). Every
service that connects (``run``, ``serve``, ``deliver``) stops with exit code 2 and one
line saying cluster mode is not supported yet and what to use instead, never a
``MovedError`` traceback; a standalone server still connects.
"""

from __future__ import annotations

import pytest

from engine.cli import main
from engine.errors import StoreError
from engine.redis_client import connect
from tests.cluster import LocalCluster


def test_connect_refuses_a_cluster_node(redis_cluster: LocalCluster) -> None:
    for port in redis_cluster.ports:  # any node, master or replica
        assert redis_cluster.info(port)["cluster_enabled"] == "1"
        with pytest.raises(StoreError, match="Redis Cluster node") as caught:
            connect(f"redis://127.0.0.1:{port}/0", retries=0)
        assert "not support Redis Cluster yet" in str(caught.value)
        assert "Sentinel" in str(caught.value)


def test_connect_accepts_a_standalone_server(redis_url: str) -> None:
    connect(redis_url, retries=0).close()


@pytest.mark.parametrize(
    "argv",
    [["run"], ["serve", "--port", "0"], ["deliver"]],
    ids=["run", "serve", "deliver"],
)
def test_every_service_stops_in_one_line_on_a_cluster(
    argv: list[str], redis_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--redis-url", redis_cluster.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("leadpulse: Redis at redis://127.0.0.1:")
    assert "does not support Redis Cluster yet" in err
    assert "Traceback" not in err and "MovedError" not in err
