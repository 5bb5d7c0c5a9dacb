"""Web sends and downloads of files and videos, against images of the same bytes in the
same run as the baseline.

    python -m bench.media_send [--mib 4] [--rounds 5]

The server runs in a child process (``wxnet serve``). A web session of alice uploads one
payload per send (``webwxuploadmedia``, not timed), then sends it to bob (timed): as an
image (``webwxsendmsgimg``, the baseline: the same feed to the mobile CGIs plus the
thumbnail), as a file (``webwxsendappmsg``) and as a video (``webwxsendvideomsg``),
alternating, ``--rounds`` times each. The payload is a PNG of noise (so that it is an
image too). Then each message is downloaded whole (``webwxgetmsgimg``,
``webwxgetmedia``, ``webwxgetvideo``) as often. Medians in seconds, and the ratios to
the image's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from bench.spawn import ServerProcess
from bench.web_sync import CGI, login, mm, web_login
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb

CHUNK = 512 * 1024


def noise_png(mib: float) -> bytes:
    side = int((mib * 1024 * 1024 / 3) ** 0.5)
    img = Image.frombytes("RGB", (side, side), random.Random(1).randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


async def setup(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    phones = {name: await login(http, base, name) for name in ("alice", "bob")}
    await mm(
        http,
        base,
        "verifyuser",
        pb.AddContactRequest(base=phones["alice"], user_name="bob"),
        pb.AddContactResponse,
    )
    return await web_login(http, base, phones["alice"])


async def upload(http: aiohttp.ClientSession, base: str, br: dict[str, Any], data: bytes) -> str:
    chunks = (len(data) + CHUNK - 1) // CHUNK
    cmid = random.getrandbits(40)
    reply: dict[str, Any] = {}
    for i in range(chunks):
        form = aiohttp.FormData()
        form.add_field("name", "x.png")
        form.add_field("size", str(len(data)))
        form.add_field("chunks", str(chunks))
        form.add_field("chunk", str(i))
        req = {"BaseRequest": br, "ClientMediaId": cmid, "TotalLen": len(data)}
        form.add_field("uploadmediarequest", json.dumps(req))
        form.add_field("filename", data[i * CHUNK : (i + 1) * CHUNK], filename="x.png")
        async with http.post(f"{base}{CGI}/webwxuploadmedia?f=json", data=form) as r:
            reply = json.loads(await r.text())
    assert reply["BaseResponse"]["Ret"] == 0, reply
    return str(reply["MediaId"])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=float, default=4.0, help="payload size")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
    wxnet = [sys.executable, "-m", "wxnet"]
    for cmd in (["store", "init"], ["user", "add", "alice"], ["user", "add", "bob"]):
        extra = ["--password", "secret1"] if cmd[0] == "user" else []
        p = await asyncio.create_subprocess_exec(
            *wxnet, *cmd, *extra, "--data", str(data_dir), stdout=asyncio.subprocess.DEVNULL
        )
        assert await p.wait() == 0
    payload = noise_png(args.mib)
    srv = await ServerProcess.on_data(data_dir, "--contacts", "open").astart(30)
    base = f"http://127.0.0.1:{srv.http_port}"
    bob = wp.web_user_name("bob")
    times: dict[str, list[float]] = {"image": [], "file": [], "video": []}
    gets: dict[str, list[float]] = {"image": [], "file": [], "video": []}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            br = await setup(http, base)
            for _ in range(args.rounds):
                for kind in ("image", "file", "video"):  # alternate, one of each per round
                    media_id = await upload(http, base, br, payload)
                    msg: dict[str, Any] = {"ToUserName": bob, "MediaId": media_id}
                    path = {"image": "/webwxsendmsgimg", "video": "/webwxsendvideomsg"}.get(
                        kind, "/webwxsendappmsg"
                    )
                    if kind == "file":
                        msg["Content"] = (
                            f"<appmsg><title>x.png</title><type>6</type><appattach>"
                            f"<totallen>{len(payload)}</totallen><attachid>{media_id}"
                            "</attachid></appattach></appmsg>"
                        )
                    body = json.dumps({"BaseRequest": br, "Msg": msg})
                    t0 = time.perf_counter()
                    hdrs = {"Content-Type": "application/json"}
                    async with http.post(f"{base}{CGI}{path}", data=body, headers=hdrs) as r:
                        text = await r.text()
                    assert r.status == 200, (r.status, text)
                    out = json.loads(text)
                    times[kind].append(time.perf_counter() - t0)
                    assert out["BaseResponse"]["Ret"] == 0, out
                    msg_id = out["MsgID"]
                    url = {
                        "image": f"/webwxgetmsgimg?MsgID={msg_id}",
                        "video": f"/webwxgetvideo?msgid={msg_id}",
                        "file": f"/webwxgetmedia?mediaid=@wxfile_{msg_id}&filename=x.png",
                    }[kind]
                    cookies = {"wxuin": str(br["Uin"]), "wxsid": br["Sid"]}
                    t0 = time.perf_counter()
                    async with http.get(f"{base}{CGI}{url}", cookies=cookies) as r:
                        got = await r.read()
                    gets[kind].append(time.perf_counter() - t0)
                    assert got == payload, (kind, r.status)
    finally:
        await srv.astop()
    med = {k: statistics.median(v) for k, v in times.items()}
    dl = {k: statistics.median(v) for k, v in gets.items()}
    print(
        json.dumps(
            {
                "payload_bytes": len(payload),
                "rounds": args.rounds,
                "send_median_s": {k: round(v, 4) for k, v in med.items()},
                "send_ratio_to_image": {k: round(v / med["image"], 3) for k, v in med.items()},
                "download_median_s": {k: round(v, 4) for k, v in dl.items()},
                "download_ratio_to_image": {k: round(v / dl["image"], 3) for k, v in dl.items()},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
