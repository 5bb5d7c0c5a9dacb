"""What an idle account costs the engine (issue 11): the log tail lets go of what a
device committed, contact names are one sorted tuple of shared strings, and SQLite's
page cache has its configured size. None of it may change an answer."""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.synckey import KEY_CONTACT, KEY_MSG, SELECTOR_BITS, SyncKey
from wxnet.sync.accounts import ContactNames
from wxnet.sync.cache import ActiveCache, BoundedCache
from wxnet.sync.engine import Engine, EngineConfig
from wxnet.sync.passwords import hash_password
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import KEY_SENT, Append, SessionRow, session_key_hash

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


def test_contact_names_are_one_small_tuple() -> None:
    assert list(ContactNames(["carol", "bob", "carol"])) == ["bob", "carol"]
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


def test_a_bounded_cache_drops_its_oldest_entries() -> None:
    c: BoundedCache[int, int] = BoundedCache(16)
    for i in range(100):
        c[i] = i
        assert len(c) <= 16
    assert c[99] == 99 and 0 not in c and c.evicted == 100 - len(c)


async def test_small_caches_change_no_answer(tmp_path: Path) -> None:
    cfg = EngineConfig(durability="NORMAL", contacts="open", cache_entries=2, active_accounts=1)
    engine = Engine(tmp_path / "var", cfg)
    await engine.start()
    try:
        names = [f"user{i}" for i in range(6)]
        for name in names:
            await engine.store.create_account(name, PW_HASH, name, engine.now())
        sessions = [await engine.login(n, "secret1", f"{n}-phone", "phone") for n in names]
        for s in sessions[1:]:
            await engine.add_contact(sessions[0], s.user_name)
        for s in sessions:  # every session, contact list and name is read again
            assert await engine.session(s.sid, s.uin) == s
            assert await engine.lookup(s.user_name) == s.uin
            assert await engine.account(s.uin) == (s.user_name, s.user_name)
        assert [c.user_name for c in await engine.contacts(sessions[0])] == names[1:]
        for s in sessions[1:]:
            assert await engine.is_contact(s.uin, "user0")
            assert not await engine.is_contact(s.uin, s.user_name)
            res = await engine.send(s, [_text("user0", s.uin)])
            assert res[0].ret == 0
        key = (await engine.newinit(sessions[0])).key
        for s in sessions:  # the commit marks of devices dropped from the cache
            engine.commit(s, key if s is sessions[0] else (await engine.newinit(s)).key)
        engine.commit(sessions[0], key)
        await engine.store.flush()
        assert await engine.committed_key(sessions[0].uin, "user0-phone") == key
        caches = engine.caches()
        assert len(caches["groups"]) <= 2
        assert all(len(c) <= 2 * c.cap for c in caches.values())
        assert caches["sessions"].evicted > 0 and caches["log_heads"].evicted > 0
    finally:
        engine.close()


@given(st.lists(st.tuples(st.sampled_from("gsp"), st.integers(0, 12)), max_size=200))
def test_an_active_cache_acts_as_a_dict_of_what_it_holds(ops: list[tuple[str, int]]) -> None:
    """Every answer it gives is the dict's; it holds at most twice its cap; and a key
    is never dropped while fewer than ``cap`` other keys were used since its last use."""
    cap = 4
    c: ActiveCache[int, int] = ActiveCache(cap)
    want: dict[int, int] = {}
    used: list[int] = []  # keys by last use, the latest last
    for op, k in ops:
        if op == "s":
            c[k] = want[k] = k * 10
        elif op == "p":
            assert c.pop(k) == want.pop(k, None) or k not in c
            want.pop(k, None)
        held = c.get(k)
        if k in want:
            others = set(used[used.index(k) + 1 :]) if k in used else set(range(99))
            assert held == want[k] or (held is None and len(others) >= cap)
            if held is None:
                del want[k]
        else:
            assert held is None
        used = [x for x in used if x != k] + [k]
        assert len(c) <= 2 * cap
        assert all(want[x] == v for x, v in c.items())


def _cold(cfg: EngineConfig) -> EngineConfig:
    return dataclasses.replace(cfg, active_accounts=1, cache_entries=1)


async def _story(path: Path, cfg: EngineConfig) -> list[object]:
    """Accounts that add each other, send, sync part-way, log in again and sync from
    a kept key: everything the engine answers, in order."""
    engine = Engine(path, cfg, clock=lambda: 1_700_000_000.0)
    await engine.start()
    out: list[object] = []
    try:
        names = [f"user{i}" for i in range(5)]
        for name in names:
            await engine.store.create_account(name, PW_HASH, name, engine.now())
        sess = [await engine.login(n, "secret1", f"{n}-phone", "phone") for n in names]
        keys = [(await engine.newinit(s)).key for s in sess]
        for i, s in enumerate(sess):
            await engine.add_contact(s, names[(i + 1) % 5])
        for n in range(12):
            s = sess[n % 5]
            res = await engine.send(s, [_text(names[(n * 3 + 1) % 5], n)])
            out.append([(r.ret, r.msg_id) for r in res])
            if n % 4 == 3:  # someone syncs and commits part-way
                r = sess[(n + 2) % 5]
                got = await engine.newsync(r, keys[(n + 2) % 5])
                out.append((got.items, got.key.to_bytes()))
                engine.commit(r, got.key)
                keys[(n + 2) % 5] = got.key
        pad = await engine.login("user1", "secret1", "user1-pad", "pad")
        for s in [*sess, pad]:
            got = await engine.newsync(s, keys[sess.index(s)] if s in sess else SyncKey())
            out.append((got.items, got.key.to_bytes()))
            out.append([c.user_name for c in await engine.contacts(s)])
            out.append(await engine.user_info(s.uin))
        await engine.store.flush()
        for s in sess:
            out.append(await engine.committed_key(s.uin, s.device_id))
    finally:
        engine.close()
    return out


async def test_cold_caches_give_the_same_answers(tmp_path: Path) -> None:
    """An engine that keeps one account's state (every other one read back from the
    store at each use) answers exactly as one that keeps everything."""
    cfg = EngineConfig(durability="NORMAL", contacts="open")
    warm = await _story(tmp_path / "warm", cfg)
    cold = await _story(tmp_path / "cold", _cold(cfg))
    assert cold == warm


@pytest.mark.parametrize(
    ("key", "sync"),
    [
        ("active_accounts", EngineConfig(active_accounts=0)),
        ("cache_entries", EngineConfig(cache_entries=0)),
    ],
)
def test_a_cache_bound_below_one_is_refused(key: str, sync: EngineConfig) -> None:
    from wxnet.server.config import ConfigError, ServerConfig, _validate

    with pytest.raises(ConfigError, match=key):
        _validate(dataclasses.replace(ServerConfig(), sync=sync))


async def test_the_cached_heads_of_large_uins_and_keys_are_their_own(tmp_path: Path) -> None:
    """Accounts whose uins differ by 2**32 or in their high bits, and keys beyond
    16 bits (the log tail keys its rings by ``uin << 32 | key``): each log keeps its
    own head, in the writer's cache and the loop's, from one group to the next and
    once dropped from both."""
    store = SQLiteStore(tmp_path / "wxnet.db", "NORMAL", profile_item=lambda *_: b"p")
    await store.start(lambda ch: None)
    try:
        uins = [1, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 62) + 1, (1 << 63) - 1]
        keys = [KEY_MSG, KEY_CONTACT, KEY_SENT, (1 << 16) + 1, (1 << 32) - 1]

        def add(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO accounts VALUES (?,?,?,?,0)",
                [(u, f"u{u}", "n", PW_HASH) for u in uins],
            )

        await store.db.write(add)
        want: dict[tuple[int, int], int] = {}
        for rnd in range(3):
            if rnd == 2:  # both caches dropped: the heads come from SQLite
                store._heads.clear()
                await store.db.write(lambda c: store._w_heads.clear())
            appends = []
            for i, u in enumerate(uins):
                for j, k in enumerate(keys):
                    n = 1 + (i + j + rnd) % 3
                    appends += [Append([u], k, b"x%d" % n)] * n
                    want[(u, k)] = want.get((u, k), 0) + n
            await store.append(appends)
            for (u, k), head in want.items():
                assert await store.head(u, k, fresh=True) == head
                # the loop caches the served keys' heads alone (None: ask the store)
                assert store.head_now(u, k) == (head if k in SELECTOR_BITS else None)
                items, _ = await store.read_log(u, [(k, 0)], 100, 1 << 20)
                assert [s for _, s, _ in items] == list(range(1, head + 1))
    finally:
        store.close()


_DEVICE_OPS = st.lists(
    st.tuples(st.sampled_from("cde"), st.sampled_from(["phone", "pad", "web"]), st.integers(0, 3)),
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(ops=_DEVICE_OPS)
async def test_the_writers_devices_answer_as_the_sessions_table(
    ops: list[tuple[str, str, int]],
) -> None:
    """The writer's cached devices of an account (one pair, or a dict for several),
    kept by session creates, logouts and evictions, give the S17 answer that the
    sessions table gives, for every device and time."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "wxnet.db", "NORMAL", profile_item=lambda *_: b"p")
        await store.start(lambda ch: None)
        try:
            uin = await store.create_account("alice", PW_HASH, "alice", 100)
            sids: list[str] = []
            for i, (op, dev, t) in enumerate(ops):
                if op == "c":
                    sids.append(f"s{i}")
                    row = SessionRow(sids[-1], uin, "alice", dev, "D", "mobile", 100 + t)
                    await store.create_session(row, 100)
                elif op == "d" and sids:
                    await store.delete_session(sids.pop(t % len(sids)))
                elif op == "e":
                    gone = set(await store.evict_sessions(uin, t))
                    sids = [s for s in sids if session_key_hash(s) not in gone]
                for asked in ("phone", "pad"):
                    for now in (100, 102):

                        def other(c: sqlite3.Connection, a: str = asked, n: int = now) -> bool:
                            return store._w_other_device(c, uin, a, n)

                        got = await store.db.write(other)
                        assert got == await store.has_other_device(uin, asked, now)
        finally:
            store.close()


async def test_a_default_nick_is_the_names_string(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "var", EngineConfig(durability="NORMAL"))
    await engine.start()
    try:
        # as add_user stores them (check_new_user: no nick given, the name)
        plain = await engine.store.create_account("plain", PW_HASH, "plain", engine.now())
        named = await engine.store.create_account("named", PW_HASH, "Named One", engine.now())
        name, nick = await engine.account(plain)
        assert (name, nick) == ("plain", "plain") and nick is name
        assert await engine.account(named) == ("named", "Named One")
        engine._account.clear()
        assert await engine.lookup("plain") == plain
        name, nick = await engine.account(plain)
        assert nick is name
    finally:
        engine.close()
