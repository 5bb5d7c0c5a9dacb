"""What an idle account costs the engine (issue 11): the log tail lets go of what a
device committed, contact names are one sorted tuple of shared strings, and SQLite's
page cache has its configured size. None of it may change an answer."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.synckey import KEY_MSG, SyncKey
from wxnet.sync.accounts import ContactNames
from wxnet.sync.engine import Engine, EngineConfig
from wxnet.sync.passwords import hash_password
from wxnet.sync.sqlite_store import SQLiteStore

PW_HASH = hash_password("secret1")


def _text(to: str, n: int) -> pb.MicroMsg:
    return pb.MicroMsg(to_user=to, content=f"m{n}", msg_type=1, client_msg_id=f"c{n}")


async def test_a_synced_account_holds_nothing_in_the_tail(tmp_path: Path) -> None:
    cfg = EngineConfig(durability="NORMAL", contacts="open", page_cache_kib=512)
    engine = Engine(tmp_path / "var", cfg)
    await engine.start()
    try:
        for name in ("alice", "bob"):
            await engine.store.create_account(name, PW_HASH, name, engine.now())
        a = await engine.login("alice", "secret1", "alice-phone", "phone")
        b = await engine.login("bob", "secret1", "bob-phone", "phone")
        b2 = await engine.login("bob", "secret1", "bob-pad", "pad")
        await engine.add_contact(a, "bob")
        start = (await engine.newinit(b)).key
        for n in range(3):
            await engine.send(a, [_text("bob", n)])
        store = engine.store
        assert isinstance(store, SQLiteStore)
        assert store.statistics()["tail_logs"] > 0
        # bob's phone syncs and commits: his logs leave the tail; alice has not synced
        res = await engine.newsync(b, start)
        assert [i[1] for i in res.items if i[0] == KEY_MSG] == [1, 2, 3]
        engine.commit(b, res.key)
        bob = store.tail.read(b.uin, KEY_MSG, 0, await store.head(b.uin, KEY_MSG))
        assert bob is None
        assert store.statistics()["tail_trimmed"] >= 3
        # bob's second device, behind, gets the same items: from SQLite now
        misses = store.statistics()["tail_misses"]
        again = await engine.newsync(b2, start)
        assert again.items == res.items
        assert store.statistics()["tail_misses"] > misses
        # alice commits too: nothing is held for anyone, not even an empty ring
        mine = await engine.newsync(a, SyncKey())
        engine.commit(a, (await engine.newsync(a, mine.key)).key)
        assert store.statistics()["tail_logs"] == 0 and store.statistics()["tail_bytes"] == 0
        # the page cache of every connection is the configured one
        sizes = [store.db.read_now(lambda c: c.execute("PRAGMA cache_size").fetchone()[0])]
        sizes.append(await store.db.write(lambda c: c.execute("PRAGMA cache_size").fetchone()[0]))
        assert sizes == [-512, -512]
    finally:
        engine.close()


@given(st.lists(st.text("abcdef", min_size=1, max_size=4), max_size=30), st.text("abcdef"))
def test_contact_names_act_as_a_set(names: list[str], probe: str) -> None:
    got, want = ContactNames(names[: len(names) // 2]), set(names[: len(names) // 2])
    for n in names[len(names) // 2 :]:
        got.add(n)
        want.add(n)
    assert list(got) == sorted(want) and len(got) == len(want)
    assert (probe in got) == (probe in want)
    assert 3 not in got  # not a name: not a contact


def test_contact_names_share_their_strings() -> None:
    name = "".join(["car", "ol"])  # built at run time: not the interned literal
    names = ContactNames([name])
    assert next(iter(names)) is sys.intern("carol")
    small = ContactNames(["alice", "bob", "dave", "erin"])
    assert sys.getsizeof(small._names) < sys.getsizeof({"alice", "bob", "dave", "erin"}) / 2


@pytest.mark.parametrize("kib", [0, -1])
def test_a_page_cache_too_small_is_refused(kib: int) -> None:
    from wxnet.server.config import ConfigError, ServerConfig, _validate

    cfg = dataclasses.replace(
        ServerConfig(), sync=dataclasses.replace(EngineConfig(), page_cache_kib=kib)
    )
    with pytest.raises(ConfigError, match="page_cache_kib"):
        _validate(cfg)
