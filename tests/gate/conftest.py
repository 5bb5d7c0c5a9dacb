"""Shared fixtures of the gateway's namespace tests: one world (phones, gateway,
internet) per session, shared by the end-to-end and the red-team modules, and a
factory of gateways that removes what it started."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gate.netns import GW_LAN_IP, OPERATOR_RANGES, UPSTREAM_DNS, World, read_line


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("gate-netns"))
    try:
        w.setup()
        yield w
    finally:
        w.close()


class Gate:
    """One ``wxnet gate run`` in the gateway namespace."""

    def __init__(
        self,
        world: World,
        policy: str,
        tmp: Path,
        verbose: bool = False,
        short: bool = False,
        expect_ready: bool = True,
        table: str | None = None,
    ) -> None:
        self.world = world
        self.table = table or f"wxt{world.sfx}{os.urandom(2).hex()}"
        self.dir = tmp
        self.config = tmp / f"gate-{self.table}.toml"
        self.config.write_text(
            policy.format(
                lan=world.lan_if, table=self.table, tmp=tmp, upstream=UPSTREAM_DNS, gw=GW_LAN_IP,
                ranges=", ".join(f'"{r}"' for r in OPERATOR_RANGES),
            )
        )  # fmt: skip
        argv = [sys.executable, "-m", "wxnet", "gate", "run", str(self.config)]
        if short:  # the form the issue documents: wxnet gate --config FILE
            argv = [sys.executable, "-m", "wxnet", "gate", "--config", str(self.config)]
        self.proc = world.spawn(world.gw, [*argv, "--verbose"] if verbose else argv)
        if not expect_ready:
            return
        line = read_line(self.proc, 30)
        if not line.startswith("ready"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"gate did not start: {line!r} {err}")

    def table_exists(self) -> bool:
        return self.world.nft("list", "table", "inet", self.table, check=False).returncode == 0

    def set_has(self, name: str, addr: str) -> bool:
        out = self.world.nft("list", "set", "inet", self.table, name).stdout
        return addr in out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=15)
        return self.proc.returncode

    def remove(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        self.world.nft("delete", "table", "inet", self.table, check=False)


GateFactory = Callable[..., Gate]


@pytest.fixture
def gate_factory(world: World, tmp_path: Path) -> Iterator[GateFactory]:
    made: list[Gate] = []

    def make(policy: str, **kw: object) -> Gate:
        gate = Gate(world, policy, tmp_path, **kw)  # type: ignore[arg-type]
        made.append(gate)
        return gate

    try:
        yield make
    finally:
        for g in made:
            g.remove()


def echo_ok(result: dict[str, object], sent: bytes) -> bool:
    reply = result.get("reply")
    return isinstance(reply, str) and bytes.fromhex(reply) == b"echo:" + sent
