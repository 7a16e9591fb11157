"""Shared fixtures: a real Redis server (REDIS_URL, else the embedded Valkey), never a fake.

Each test gets its own key prefix and its keys are deleted afterwards, so tests
can share one server without seeing each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from engine.keys import every_pattern
from engine.redis_client import EmbeddedServer, connect
from engine.settings import Settings, load_settings
from tests.cluster import LocalCluster, missing_binaries


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "")
    if url:
        yield url
        return
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    p = "t" + uuid.uuid4().hex[:10]
    yield p
    keys = list(client.scan_iter(match=every_pattern(p), count=1000))  # both key layouts
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


@pytest.fixture
def make_settings(prefix: str) -> Any:
    def make(**sections: dict[str, Any]) -> Settings:
        overrides: dict[str, Any] = {"redis": {"key_prefix": prefix}}
        overrides.update(sections)
        return load_settings(overrides=overrides, environ={})

    return make


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real 3-master Redis Cluster (one replica each) on loopback, for the session."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"a local Redis Cluster needs {' and '.join(missing)} on PATH")
    with LocalCluster(masters=3, replicas=1) as cluster:
        yield cluster
