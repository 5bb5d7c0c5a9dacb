"""What the client tells its user, as frozen typed events (one class per kind).

:data:`ClientEvent` is the union that :meth:`wxnet.client.sdk.Client.subscribe` queues:

* :class:`ItemReceived`: a sync item new to this profile (a message, a contact, a read
  receipt, a revoke), already applied to the profile;
* :class:`LinkChanged`: the client moved to the long link or fell back to the short one;
* :class:`NetworkChanged`: the network became poor or good again (S13);
* :class:`SendStateChanged`: an outbox message is sending, retrying, sent or failed (S23);
* :class:`WebLoginRequested`: a web client asks this account to log in again without a
  QR code (a push login); approve it with ``scanqrcode`` (``wxnet scan --push-approve``).

Match them with ``match ev: case ItemReceived(item=item): ...`` or ``isinstance``.
Every event has ``to_json()``: the line ``wxnet listen --json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from google.protobuf.json_format import MessageToDict

from wxnet.client.sending import NetworkQuality
from wxnet.proto import wxnet_pb2 as pb

__all__ = [
    "ClientEvent",
    "ItemReceived",
    "LinkChanged",
    "LinkKind",
    "NetworkChanged",
    "SendState",
    "SendStateChanged",
    "WebLoginRequested",
    "item_to_json",
]


class LinkKind(StrEnum):
    """Which link carries requests: none yet, the long link (TCP 8080) or HTTP."""

    NONE = "none"
    LONG = "long"
    SHORT = "short"


class SendState(StrEnum):
    """An outbox message as its user sees it (``retrying`` is ``sending`` in the store)."""

    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


def item_to_json(item: pb.CmdItem) -> dict[str, Any]:
    """A sync item as a flat JSON object: ``type`` (the body's name), ``cmd_id``, ``key``,
    ``seq`` and the body's fields (an image's bytes as ``img_buf_len``)."""
    kind = item.WhichOneof("body") or "unknown"
    out: dict[str, Any] = {"type": kind, "cmd_id": item.cmd_id, "key": item.key, "seq": item.seq}
    if kind != "unknown":
        body = MessageToDict(
            getattr(item, kind), preserving_proto_field_name=True, use_integers_for_enums=True
        )
        if "img_buf" in body:
            body["img_buf_len"] = len(item.add_msg.img_buf)
            del body["img_buf"]
        out.update(body)
    for k in ("msg_id", "seq", "create_time"):
        if k in out:
            out[k] = int(out[k])
    return out


@dataclass(frozen=True, slots=True)
class ItemReceived:
    """A sync item applied to the profile for the first time (each item once, S19)."""

    item: pb.CmdItem

    @property
    def body_type(self) -> str:
        """The item's body: ``add_msg``, ``contact``, ``revoke``, ``msg_status``, ..."""
        return self.item.WhichOneof("body") or "unknown"

    def to_json(self) -> dict[str, Any]:
        return {"event": "item", **item_to_json(self.item)}


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """``link`` is now in use. On the long link, ``address`` and ``source`` (dns, newdns,
    builtin) say where it goes; on a fall-back to the short link, ``reason`` says why."""

    link: LinkKind
    address: str = ""
    source: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.link is LinkKind.LONG:
            return {
                "event": "link",
                "link": self.link.value,
                "address": self.address,
                "source": self.source,
            }
        return {"event": "link", "link": self.link.value, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class NetworkChanged:
    """The S13 verdict changed (emitted on the edge only)."""

    quality: NetworkQuality

    def to_json(self) -> dict[str, Any]:
        return {"event": "network", "quality": self.quality.value}


@dataclass(frozen=True, slots=True)
class SendStateChanged:
    """An outbox message changed state; ``msg_id`` once sent, ``reason`` on a retry or
    a failure."""

    client_msg_id: str
    state: SendState
    msg_id: int = 0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "send",
            "client_msg_id": self.client_msg_id,
            "state": self.state.value,
        }
        if self.state is SendState.SENT:
            out["msg_id"] = self.msg_id
        elif self.state is not SendState.SENDING:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class WebLoginRequested:
    """A web client that was logged in as this account asks to log in again (the
    ``web_login`` sync item): ``uuid`` of the login, who asks (``user_agent``,
    ``address``), and until when (``expires``, unix seconds)."""

    uuid: str
    user_agent: str
    address: str
    expires: int

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "web_login",
            "uuid": self.uuid,
            "user_agent": self.user_agent,
            "address": self.address,
            "expires": self.expires,
        }


ClientEvent = ItemReceived | LinkChanged | NetworkChanged | SendStateChanged | WebLoginRequested
