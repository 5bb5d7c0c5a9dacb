from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wxnet.clock import FakeClock
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig
from wxnet.sync.engine import EngineConfig


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "var",
        sync=EngineConfig(durability="NORMAL", contacts="open"),  # consent: test_consent
    )


@pytest.fixture
async def server(config: ServerConfig, clock: FakeClock) -> AsyncIterator[Server]:
    srv = await start_server(config, clock)
    for name in ("alice", "bob", "carol"):
        await srv.engine.add_user(name, "secret1", name.title())
    try:
        yield srv
    finally:
        await srv.close()


def with_sync(config: ServerConfig, **changes: Any) -> ServerConfig:
    return dataclasses.replace(config, sync=dataclasses.replace(config.sync, **changes))
