"""The nftables adapter against a real kernel, in a namespace of its own."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.nft import Nft, NftError
from wxnet.gate.policy import parse_policy
from wxnet.gate.ruleset import render

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("nft") is None,
        reason="needs root and nft (CI is root: make sysdeps installs nftables)",
    ),
]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"wxnft-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def listing(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], capture_output=True, text=True, check=True
    ).stdout


async def test_apply_fill_refresh_reapply_remove(netns: str) -> None:
    policy = parse_policy(POLICY, CATALOG)
    nft = Nft(policy.settings.table, netns=netns)
    await nft.run(render(policy, frozenset({"staff", "kids"})))
    d = "d_staff_wechat"
    assert await nft.add([(d, "192.0.2.7", 300), (d, "2001:db8::7", 300)], 0.0) == 2
    assert await nft.add([(d, "192.0.2.7", 300)], 10.0) == 0  # still fresh: no spawn
    # Close to expiry: deleted and re-added in one transaction (kernel keeps old timeouts).
    assert await nft.add([(d, "192.0.2.7", 300)], 200.0) == 1
    out = listing(netns, "list", "set", "inet", "wxtest", "d_staff_wechat_4")
    assert "192.0.2.7" in out
    assert "2001:db8::7" in listing(netns, "list", "set", "inet", "wxtest", "d_staff_wechat_6")
    # per-device block verdicts and clean cache: concatenated keys, both families
    assert await nft.add([("x_kids", "10.1.0.9 . 192.0.2.8", 300),
                          ("c_kids", "2001:db8::9 . 2001:db8::8 . 443", 60)], 0.0) == 2  # fmt: skip
    assert "10.1.0.9 . 192.0.2.8" in listing(netns, "list", "set", "inet", "wxtest", "x_kids_4")
    # A schedule change re-applies the chains and keeps the learned addresses.
    await nft.run(render(policy, frozenset({"kids"}), fresh=False))
    assert "192.0.2.7" in listing(netns, "list", "set", "inet", "wxtest", "d_staff_wechat_4")
    assert "198.51.100.0/25" in listing(netns, "list", "set", "inet", "wxtest", "o_wechat_4")
    assert "goto fwd_staff" not in listing(netns, "list", "chain", "inet", "wxtest", "forward")
    with pytest.raises(NftError):
        await nft.run("add rule inet wxtest forward bogus\n")
    await nft.remove_table()
    await nft.remove_table()  # removing twice is fine
    assert "wxtest" not in listing(netns, "list", "tables")


def test_libnftables_in_process(netns: str) -> None:
    """The in-process path (what `wxnet gate run` uses), run inside the namespace."""
    import sys

    code = (
        "from wxnet.gate.nft import LibNftables, NftError\n"
        "lib = LibNftables()\n"
        "lib.run('add table inet wxlib\\n')\n"
        "lib.run('add set inet wxlib s { type ipv4_addr; flags timeout; }\\n')\n"
        "lib.run('add element inet wxlib s { 192.0.2.9 timeout 60s }\\n')\n"
        "try:\n"
        "    lib.run('add element inet wxlib nosuchset { 192.0.2.9 }\\n')\n"
        "except NftError as exc:\n"
        "    print('refused:', 'nosuchset' in str(exc))\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "refused: True"
    assert "192.0.2.9" in listing(netns, "list", "set", "inet", "wxlib", "s")
