"""The lab's agents: the processes that play the phone and its chat partner in a case.

The lab starts them inside its namespaces as
``python -m wxnet.lab.agent ROLE CONFIG_JSON``; each writes JSON lines on stdout
(``{"type": "event", ...}`` while it runs, one ``{"type": "result", ...}`` at the end).

- ``setup``: log in as ``user`` and add ``peer`` as a contact (once per run).
- ``peer`` (in the internet namespace, never behind the faults): log in, send
  ``messages`` texts to the phone's user, say ``sent``, then wait until every text and the
  image from the phone have arrived.
- ``phone`` (behind the gateway): a fresh client start: find the service (S9, S12, S14),
  log in, send ``messages`` texts and one image, and receive the peer's texts; says which
  path it took, when its first message was acknowledged, and whether it had to report
  a poor network (S13).
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from wxnet.lab.probe import (
    LinkError,
    LongLink,
    Path,
    ProbeClient,
    ProbeConfig,
    find_path,
)
from wxnet.lab.results import Link, unknown_fields
from wxnet.proto.errors import MMError

__all__ = ["AgentConfig", "main", "make_image", "run_agent"]

ROLES = ("setup", "peer", "phone", "web", "warmup")
#: what a browser sends (S1: the boss wants no web pages on the phones)
BROWSER_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Mobile Safari/537.36"
)


@dataclass
class AgentConfig:
    user: str
    password: str
    peer: str = ""
    tag: str = "lab"
    messages: int = 3
    image_bytes: int = 24_000
    chunk: int = 8192
    time_limit: float = 20.0
    long_name: str = "long.wxnet.lab"
    short_name: str = "short.wxnet.lab"
    builtin: list[str] = field(default_factory=list)
    long_port: int = 8080
    short_port: int = 80
    extra_port: int | None = 14000
    connect_timeout: float = 2.0
    request_timeout: float = 8.0
    attempts: int = 2
    #: the peer and setup connect straight to this address's long link
    direct: str = "127.0.0.1"
    dns_name: str = "dns.wxnet.lab"
    #: who plays the phone: "sdk" (wxnet.client) or "core" (wxnet.lab.probe)
    client: str = "core"
    #: the SDK's profile directory (fresh per case)
    profile: str = ""
    #: the ordinary web site (the "web" role browses it)
    web_name: str = "www.example.lab"
    web_ip: str = ""

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the agent config must be a JSON object")
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ValueError(f"unknown agent config field(s): {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def probe(self) -> ProbeConfig:
        return ProbeConfig(
            long_name=self.long_name, short_name=self.short_name, builtin=self.builtin,
            long_port=self.long_port, short_port=self.short_port, extra_port=self.extra_port,
            connect_timeout=self.connect_timeout, request_timeout=self.request_timeout,
            attempts=self.attempts,
        )  # fmt: skip


def make_image(size: int, seed: str) -> bytes:
    """A real JPEG of roughly ``size`` bytes (noise compresses badly, so size is easy to
    reach), different for every ``seed``."""
    from PIL import Image

    side = 16
    while True:
        raw = secrets.token_bytes(side * side * 3)
        buf = io.BytesIO()
        Image.frombytes("RGB", (side, side), raw).save(buf, "JPEG", quality=90,
                                                       comment=seed.encode())  # fmt: skip
        if buf.tell() >= size or side >= 512:
            return buf.getvalue()
        side *= 2


def emit(kind: str, **data: Any) -> None:
    print(json.dumps({"type": kind, **data}, sort_keys=True), flush=True)


async def _direct(cfg: AgentConfig) -> ProbeClient:
    link = await LongLink.connect(cfg.direct, cfg.long_port, cfg.connect_timeout, Link.LONG)
    client = ProbeClient(link, cfg.request_timeout)
    try:
        await client.login(cfg.user, cfg.password, f"lab-{cfg.user}-{secrets.token_hex(4)}")
    except BaseException:
        await client.close()
        raise
    return client


async def run_setup(cfg: AgentConfig) -> dict[str, Any]:
    from wxnet.proto import wxnet_pb2 as pb

    client = await _direct(cfg)
    try:
        req = pb.AddContactRequest(base=client.base, user_name=cfg.peer)
        await client.t.call("verifyuser", req, pb.AddContactResponse, cfg.request_timeout)
    finally:
        await client.close()
    return {"contact": cfg.peer}


async def run_web(cfg: AgentConfig) -> dict[str, Any]:
    """A browser-like visit to the web site: by name (DNS, then GET with the browser's
    headers), and straight to its address (a cached address or a typed IP). Each says
    ``reached`` or why it was blocked."""
    import aiohttp

    from wxnet.lab.probe import resolve

    headers = {"User-Agent": BROWSER_UA, "Accept": "text/html,application/xhtml+xml"}
    timeout = aiohttp.ClientTimeout(total=cfg.connect_timeout * 2)
    out: dict[str, Any] = {}
    targets: list[tuple[str, str, str]] = []
    try:
        addrs = await resolve(cfg.web_name, cfg.connect_timeout)
        targets.append(("by_name", addrs[0], cfg.web_name))
    except (OSError, TimeoutError) as exc:
        out["by_name"] = f"blocked: DNS: {exc or 'timed out'}"
    if cfg.web_ip:
        targets.append(("direct", cfg.web_ip, cfg.web_ip))
    async with aiohttp.ClientSession(headers=headers) as session:
        for key, ip, host in targets:
            try:
                async with session.get(f"http://{ip}/", headers={"Host": host},
                                       timeout=timeout) as resp:  # fmt: skip
                    body = await resp.read()
                    ok = resp.status == 200 and b"ordinary web site" in body
                    out[key] = "reached" if ok else f"blocked: HTTP {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                out[key] = f"blocked: {type(exc).__name__}: {exc or 'timed out'}"
    out["blocked"] = all(v != "reached" for k, v in out.items() if k != "blocked")
    return out


def phone_text(tag: str, i: int) -> str:
    return f"{tag} phone text {i}"


def peer_text(tag: str, i: int) -> str:
    return f"{tag} peer text {i}"


async def run_peer(cfg: AgentConfig) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + cfg.time_limit
    client = await _direct(cfg)
    before = set(client.received.by_msg_id)  # anything older than this case
    prefix = phone_text(cfg.tag, 0)[:-1]
    try:
        for i in range(cfg.messages):
            await client.send_text(cfg.peer, peer_text(cfg.tag, i), f"{cfg.tag}-b-{i}")
        emit("event", event="sent", count=cfg.messages)
        texts, image = 0, False
        while True:
            await client.sync()
            texts = len({m.content for m in client.received.texts(cfg.peer, prefix)})
            image = bool(client.received.images(cfg.peer, before))
            emit("event", event="progress", texts=texts, image=image)
            if (texts >= cfg.messages and image) or time.monotonic() >= deadline:
                break
            await client.wait_news(min(2.0, max(0.1, deadline - time.monotonic())))
        return {
            "received": texts,
            "image": image,
            "duplicated": client.received.duplicated(cfg.peer, prefix)
            + max(0, len(client.received.images(cfg.peer, before)) - 1),
        }
    finally:
        await client.close()


class PhoneRun:
    """One phone session's result record and its timestamped log (both kinds of phone,
    :func:`run_phone` and :func:`wxnet.lab.sdkphone.run_sdk_phone`, fill the same)."""

    def __init__(self, time_limit: float, **extra: Any) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + time_limit
        self.log: list[str] = []
        self.out: dict[str, Any] = {
            "logged_in": False, "sent": 0, "acked": 0, "received": 0, "image_ok": False,
            "duplicated": 0, "network_poor": False, "first_ack_s": None, "error": "",
            **extra,
        }  # fmt: skip

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.start:6.2f}s {text}")

    def acked(self) -> None:
        """A send was acknowledged (the first one's time is kept)."""
        self.out["acked"] += 1
        self.first_ack()

    def first_ack(self) -> None:
        if self.out["first_ack_s"] is None:
            self.out["first_ack_s"] = round(time.monotonic() - self.start, 3)


async def run_phone(cfg: AgentConfig) -> dict[str, Any]:
    run = PhoneRun(cfg.time_limit)
    out, note = run.out, run.note
    found = await find_path(cfg.probe(), note)
    if found is None:
        # S13: after the failed rounds the app tells the user the network is poor
        out["network_poor"] = True
        out["error"] = "no way to the service"
        out["log"] = run.log
        emit("event", event="network_poor")
        return out
    path, transport = found
    out["path"] = _path_json(path)
    note(f"path: {path.source} -> {path.link} {path.address}:{path.port}")
    client = ProbeClient(transport, cfg.request_timeout)
    failures = 0
    try:
        await client.login(cfg.user, cfg.password, f"lab-phone-{secrets.token_hex(4)}")
        out["logged_in"] = True
        note("logged in")
        failures += await _send_all(client, cfg, run)
        await _receive_all(client, cfg, run)
    except (LinkError, MMError, OSError) as exc:
        failures += 1
        out["error"] = str(exc)
        note(f"error: {exc}")
    finally:
        await client.close()
    # S13: "after one or two failed sends" the app says the network is poor
    out["network_poor"] = failures >= 2 or not out["logged_in"]
    out["log"] = run.log
    return out


async def _send_all(client: ProbeClient, cfg: AgentConfig, run: PhoneRun) -> int:
    """The case's texts, then the image; returns how many sends failed."""
    failures = 0
    for i in range(cfg.messages):
        run.out["sent"] += 1
        try:
            await client.send_text(cfg.peer, phone_text(cfg.tag, i), f"{cfg.tag}-a-{i}")
        except (LinkError, MMError) as exc:
            failures += 1
            run.note(f"send {i} failed: {exc}")
            continue
        run.acked()
    image = make_image(cfg.image_bytes, cfg.tag)
    try:
        await client.send_image(cfg.peer, image, f"{cfg.tag}-a-img", cfg.chunk)
        run.out["image_ok"] = True
        run.note(f"image of {len(image)} bytes sent")
    except (LinkError, MMError) as exc:
        failures += 1
        run.note(f"image failed: {exc}")
    return failures


async def _receive_all(client: ProbeClient, cfg: AgentConfig, run: PhoneRun) -> None:
    """Sync until the peer's texts are all in, or the case's time is up."""
    out, prefix = run.out, peer_text(cfg.tag, 0)[:-1]
    while time.monotonic() < run.deadline:
        await client.sync()
        got = client.received.texts(cfg.peer, prefix)
        out["received"] = len({m.content for m in got})
        if out["received"] >= cfg.messages:
            break
        await client.wait_news(min(2.0, max(0.1, run.deadline - time.monotonic())))
    out["duplicated"] = client.received.duplicated(cfg.peer, prefix)
    run.note(f"received {out['received']} of {cfg.messages}")


def _path_json(path: Path) -> dict[str, Any]:
    return {
        "source": str(path.source),
        "link": str(path.link),
        "address": path.address,
        "port": path.port,
    }


async def run_agent(role: str, cfg: AgentConfig) -> dict[str, Any]:
    if role == "setup":
        return await run_setup(cfg)
    if role == "peer":
        return await run_peer(cfg)
    if role == "phone" and cfg.client == "sdk":
        from wxnet.lab.sdkphone import run_sdk_phone

        return await run_sdk_phone(cfg)
    if role == "phone":
        return await run_phone(cfg)
    if role == "web":
        return await run_web(cfg)
    if role == "warmup":
        from wxnet.lab.sdkphone import run_sdk_warmup

        return await run_sdk_warmup(cfg)
    raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")


CLIENTS = ("sdk", "core")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ROLES:
        print(f"usage: python -m wxnet.lab.agent {{{'|'.join(ROLES)}}} CONFIG_JSON",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        cfg = AgentConfig.from_json(args[1])
        if cfg.client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}, not {cfg.client!r}")
    except (ValueError, TypeError) as exc:
        print(f"agent: error: bad config: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_agent(args[0], cfg))
    except (LinkError, MMError, OSError) as exc:
        emit("result", ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    emit("result", ok=True, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
