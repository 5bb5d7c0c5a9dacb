"""``wxnet user add`` and ``wxnet user list`` on a PostgreSQL store, as a user runs them
(``--config`` with ``[store] kind = "postgres"``), in real processes. (``wxnet store
init|version|migrate`` on PostgreSQL: tests/server/test_migrate.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path


async def wxnet(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "wxnet", *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                   timeout=60)  # fmt: skip


async def test_user_and_store_commands_on_postgres(pg_dsn: str, tmp_path: Path) -> None:
    conf = tmp_path / "wxnet.toml"
    conf.write_text(f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n')
    where = ["--config", str(conf), "--data", str(tmp_path / "var")]
    for name in ("dave", "erin"):
        res = await wxnet("user", "add", name, "--password", "secret1", "--nick", name.title(),
                          *where)  # fmt: skip
        assert res.returncode == 0, res.stderr
    listed = await wxnet("user", "list", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["user_name"], r["nick_name"]) for r in rows] == [("dave", "Dave"), ("erin", "Erin")]
    assert rows[0]["uin"] < rows[1]["uin"] and all(r["created"] > 0 for r in rows)
    assert not (tmp_path / "var" / "wxnet.db").exists()  # nothing went to SQLite


async def test_user_list_on_an_unreachable_postgres_says_so(tmp_path: Path) -> None:
    from tests.engines import free_port

    conf = tmp_path / "wxnet.toml"
    conf.write_text(
        f'[store]\nkind = "postgres"\ndsn = "postgresql://postgres@127.0.0.1:{free_port()}/x"\n'
    )
    res = await wxnet("user", "list", "--config", str(conf))
    assert res.returncode != 0 and "cannot connect to PostgreSQL" in res.stderr
    assert "Traceback" not in res.stderr
