"""bench/idle_links.py at a small N (the real server, the real protocol): every account
logs in, adds its contacts, sends and syncs, and the run reports a figure per link."""

from __future__ import annotations

from bench.idle_links import measure


async def test_idle_links_runs_the_whole_use_of_each_account() -> None:
    got = await measure(12, None, warmup=4, contacts=2, messages=2, settle=0.0)
    assert got["n"] == 12 and got["wxnet_identified_links"] == 16
    assert got["wxnet_messages_total"] == 16 * 2  # every send of every account was stored
    assert got["wxnet_sync_tail_bytes"] == 0  # all synced and committed: nothing held
    assert got["wxnet_sqlite_memory_bytes"] > 0
    assert got["rss_after_kib"] > 0 and got["bytes_per_link"] == (
        (got["rss_after_kib"] - got["rss_before_kib"]) * 1024 / 12
    )
