"""bench/idle_links.py at a small N (the real server, the real protocol): every account
logs in, adds its contacts, sends and syncs, and the run reports a figure per link."""

from __future__ import annotations

from bench.idle_links import measure


async def test_idle_links_runs_the_whole_use_of_each_account() -> None:
    got = await measure(12, None, warmup=4, contacts=2, messages=2, settle=0.0)
    assert got["n"] == 12 and got["wxnet_identified_links"] == 16
    assert got["wxnet_messages_total"] == 16 * 2  # every send of every account was stored
    assert got["wxnet_sync_tail_bytes"] == 0  # all synced and committed: nothing held
    assert got["wxnet_sync_tail_releases"] == 0  # a tail this small gives nothing back
    assert got["wxnet_sqlite_memory_bytes"] > 0 and got["wxnet_engine_cache_entries"] > 0
    assert got["rss_after_kib"] > 0 and got["bytes_per_link"] == (
        (got["rss_after_kib"] - got["rss_before_kib"]) * 1024 / 12
    )


async def test_idle_accounts_leave_the_caches_at_a_small_bound() -> None:
    """With ``[sync] active_accounts = 2`` the server ends holding the state of a few
    accounts, not of all 16, and every account's whole use still worked."""
    got = await measure(12, None, warmup=4, contacts=2, messages=2, settle=0.0, active_accounts=2)
    assert got["wxnet_identified_links"] == 16 and got["wxnet_messages_total"] == 16 * 2
    # 2 generations of 2 accounts: 4 entries in each of 6 caches, 20 in each heads cache
    assert got["wxnet_engine_cache_entries"] <= 6 * 4 + 2 * 20
    full = await measure(12, None, warmup=4, contacts=2, messages=2, settle=0.0)
    assert full["wxnet_engine_cache_entries"] > 6 * 4 + 2 * 20
