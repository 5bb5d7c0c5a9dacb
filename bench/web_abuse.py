"""Server memory and CPU under the abuse of issue 12 (web and media), old code vs new.

    python -m bench.web_abuse [--old-src DIR] [--rounds 3]

Each round starts a ``wxnet serve`` process per variant (``--old-src``: a ``src``
directory of an older checkout, e.g. ``git archive fffc483 src | tar -x -C /tmp/old``;
without it only the current code runs), alternating A/B, and measures the growth of the
server's resident set (``/proc/PID/status`` VmRSS) under:

* ``upload-nosession``: 200 connections send the head of an unauthenticated 2.5 MB
  multipart upload (a 2 MB file part and 32 fields of 16 KiB) and stall;
* ``undrained``: 40 connections ask for a 9.7 MB image and read only the response head;
* ``web-uploads``: one account starts 240 uploads of 20 MB (the first 512 KiB chunk of
  each), never finished;
* ``jslogin``: 10,050 ``/jslogin`` calls from one address, then what a browser from
  another address gets;
* ``qrcode``: CPU time of 200 ``/qrcode`` requests for one uuid.

Medians over the rounds, with the load average, go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb

CGI = "/cgi-bin/mmwebwx-bin"
MOBILE = "/cgi-bin/micromsg-bin"


class Srv:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.base = f"http://127.0.0.1:{port}"

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start(src: Path | None, data: Path) -> Srv:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if src is None:  # this checkout creates a store explicitly (the old code's user add did)
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wxnet", "store", "init", "--data", str(data),
            env=env, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await p.wait() == 0
    for name in ("alice", "bob"):
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wxnet", "user", "add", name, "--password", "secret1",
            "--data", str(data), env=env, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await p.wait() == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxnet", "serve", "--data", str(data), "--host", "127.0.0.1",
        "--long-port", "0", "--http-port", "0", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    m = re.search(r"HTTP http://127\.0\.0\.1:(\d+)/", line)
    assert m, line
    return Srv(proc, int(m.group(1)))


async def mobile(h: aiohttp.ClientSession, srv: Srv, user: str) -> tuple[int, str]:
    req = pb.ManualAuthRequest(
        base=pb.BaseRequest(device_id=f"b-{user}"), user_name=user, password="secret1"
    )
    async with h.post(f"{srv.base}{MOBILE}/manualauth", data=req.SerializeToString()) as r:
        resp = pb.ManualAuthResponse()
        resp.ParseFromString(await r.read())
    return resp.uin, resp.session_key


async def call(h: aiohttp.ClientSession, srv: Srv, name: str, req: Any, kind: type[Any]) -> Any:
    async with h.post(f"{srv.base}{MOBILE}/{name}", data=req.SerializeToString()) as r:
        resp = kind()
        resp.ParseFromString(await r.read())
        return resp


async def web_login(h: aiohttp.ClientSession, srv: Srv, uin: int, key: str) -> tuple[int, str]:
    async with h.get(f"{srv.base}/jslogin?appid=x&fun=new") as r:
        _, uuid = wp.parse_qrlogin(await r.text())
    req = pb.ScanQrRequest(base=pb.BaseRequest(uin=uin, session_key=key), uuid=uuid, confirm=True)
    await call(h, srv, "scanqrcode", req, pb.ScanQrResponse)
    async with h.get(f"{srv.base}{CGI}/login?uuid={uuid}") as r:
        poll = wp.parse_login_poll(await r.text())
    async with h.get(poll.redirect_uri, allow_redirects=False) as r:
        t = wp.parse_login_ticket(await r.text())
    return t.wxuin, t.wxsid


def noise_png(nbytes: int) -> bytes:
    from PIL import Image

    side = int((nbytes / 3) ** 0.5)
    img = Image.frombytes("RGB", (side, side), os.urandom(3 * side * side))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


async def settle(srv: Srv) -> int:
    async with aiohttp.ClientSession() as h, h.get(srv.base + "/healthz") as r:
        await r.read()
    await asyncio.sleep(0.5)  # a benchmark, not a test: let the allocator settle
    return srv.rss()


async def upload_nosession(srv: Srv) -> dict[str, float]:
    before = await settle(srv)
    conns = []
    fields = b"".join(
        b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n%s\r\n' % (i, b"v" * 60000)
        for i in range(32)
    )
    filepart = b'--B\r\nContent-Disposition: form-data; name="filename"; filename="x"\r\n\r\n'
    body = fields + filepart + b"z" * 570_000  # and then it stalls: no closing boundary
    for _ in range(200):
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(
            f"POST {CGI}/webwxuploadmedia?f=json HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
            + body
            + b"\r\n"
        )
        conns.append((r, w))
    await asyncio.gather(*(w.drain() for _, w in conns), return_exceptions=True)
    after = await settle(srv)
    for _, w in conns:
        w.close()
    return {"rss_growth_mib": (after - before) / 2**20}


async def undrained(srv: Srv) -> dict[str, float]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as h:
        a_uin, a_key = await mobile(h, srv, "alice")
        b_uin, b_key = await mobile(h, srv, "bob")
        base = pb.BaseRequest(uin=b_uin, session_key=b_key)
        add = pb.AddContactRequest(base=pb.BaseRequest(uin=a_uin, session_key=a_key))
        add.user_name = "bob"
        await call(h, srv, "verifyuser", add, pb.AddContactResponse)
        img = noise_png(9_700_000)
        cid = os.urandom(8).hex()
        resp = None
        for pos in range(0, len(img), 65536):
            req = pb.UploadMsgImgRequest(
                base=base, client_img_id=cid, to_user="alice", total_len=len(img),
                start_pos=pos, data=img[pos : pos + 65536],
            )  # fmt: skip
            resp = await call(h, srv, "uploadmsgimg", req, pb.UploadMsgImgResponse)
        assert resp is not None and resp.msg_id, resp
        uin, sid = await web_login(h, srv, a_uin, a_key)
    before = await settle(srv)
    conns = []
    for _ in range(40):
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(
            f"GET {CGI}/webwxgetmsgimg?msgid={resp.msg_id} HTTP/1.1\r\nHost: x\r\n"
            f"Cookie: wxuin={uin}; wxsid={sid}\r\n\r\n".encode()
        )
        conns.append((r, w))
    for r, _ in conns:
        await r.readuntil(b"\r\n\r\n")
    after = await settle(srv)
    for _, w in conns:
        w.close()
    return {"rss_growth_mib": (after - before) / 2**20}


async def web_uploads(srv: Srv) -> dict[str, float]:
    """8 web sessions of one account, each with 8 uploads of 20 MB sent up to 5 MB."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as h:
        a_uin, a_key = await mobile(h, srv, "alice")
        sessions = [await web_login(h, srv, a_uin, a_key) for _ in range(8)]
        before = await settle(srv)
        chunk = os.urandom(512 << 10)
        refused = sent = 0
        for uin, sid in sessions:
            cookies = {"wxuin": str(uin), "wxsid": sid}
            for m in range(8):
                for c in range(10):
                    form = aiohttp.FormData()
                    form.add_field("chunks", "40")
                    form.add_field("chunk", str(c))
                    br = {"Uin": uin, "Sid": sid, "Skey": "", "DeviceID": "e1"}
                    upreq = {"BaseRequest": br, "ClientMediaId": m, "TotalLen": 20 << 20}
                    form.add_field("uploadmediarequest", json.dumps(upreq))
                    form.add_field(
                        "filename", chunk, filename="x", content_type="application/octet-stream"
                    )
                    url = f"{srv.base}{CGI}/webwxuploadmedia?f=json"
                    async with h.post(url, data=form, cookies=cookies) as r:
                        out = json.loads(await r.text())
                    sent += 1
                    refused += out["BaseResponse"]["Ret"] != 0
        after = await settle(srv)
    return {"rss_growth_mib": (after - before) / 2**20, "chunks": sent, "refused": refused}


async def jslogin(srv: Srv) -> dict[str, float]:
    codes: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as h:

        async def one() -> None:
            async with h.get(f"{srv.base}/jslogin?appid=x&fun=new") as r:
                code = wp.parse_qrlogin(await r.text())[0] if r.status == 200 else r.status
                codes[code] = codes.get(code, 0) + 1

        await asyncio.gather(*(one() for _ in range(10_050)))
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0))
    url = f"{srv.base}/jslogin?appid=x&fun=new"
    async with aiohttp.ClientSession(connector=conn) as h, h.get(url) as r:
        text = await r.text()
        browser = wp.parse_qrlogin(text)[0] if r.status == 200 else r.status
    return {"flood_200": codes.get(200, 0), "browser_code": browser}


async def qrcode(srv: Srv) -> dict[str, float]:
    async with aiohttp.ClientSession() as h:
        async with h.get(f"{srv.base}/jslogin?appid=x&fun=new") as r:
            _, uuid = wp.parse_qrlogin(await r.text())
        cpu0 = srv.cpu()
        for _ in range(200):
            async with h.get(f"{srv.base}/qrcode/{uuid}") as r:
                await r.read()
        return {"cpu_ms_per_request": (srv.cpu() - cpu0) * 1000 / 200}


CASES: dict[str, Callable[[Srv], Awaitable[dict[str, float]]]] = {
    "upload-nosession": upload_nosession,
    "undrained": undrained,
    "web-uploads": web_uploads,
    "jslogin": jslogin,
    "qrcode": qrcode,
}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-src", type=Path, help="src/ of the code to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    variants: list[tuple[str, Path | None]] = [("new", None)]
    if args.old_src:
        variants.insert(0, ("old", args.old_src.resolve()))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rnd in range(args.rounds):
        for case in args.cases.split(","):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for name, src in order:
                tmp = Path(tempfile.mkdtemp(prefix="wxnet-bench-"))
                srv = await start(src, tmp / "data")
                try:
                    out = await CASES[case](srv)
                finally:
                    srv.proc.terminate()
                    await srv.proc.wait()
                    shutil.rmtree(tmp, ignore_errors=True)
                results.setdefault((case, name), []).append(out)
                print(json.dumps({"round": rnd, "case": case, "code": name, **out}), flush=True)
    print(f"load average: {os.getloadavg()}")
    for (case, name), outs in sorted(results.items()):
        med = {k: statistics.median(o[k] for o in outs) for k in outs[0]}
        print(f"{case:18} {name:4} " + " ".join(f"{k}={v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
    asyncio.run(main())
