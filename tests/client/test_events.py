"""The typed events keep the JSON lines of ``wxnet listen --json`` as they were."""

from __future__ import annotations

from wxnet.client.events import (
    ItemReceived,
    LinkChanged,
    LinkKind,
    NetworkChanged,
    SendState,
    SendStateChanged,
)
from wxnet.client.sending import NetworkQuality
from wxnet.proto import wxnet_pb2 as pb


def test_event_json_lines() -> None:
    item = pb.CmdItem(cmd_id=5, key=1, seq=7, add_msg=pb.AddMsg(msg_id=9, content="hi"))
    ev = ItemReceived(item)
    assert ev.body_type == "add_msg"
    got = ev.to_json()
    assert got["event"] == "item" and got["type"] == "add_msg"
    assert got["msg_id"] == 9 and got["seq"] == 7 and got["content"] == "hi"
    assert LinkChanged(LinkKind.LONG, address="1.2.3.4:8080", source="dns").to_json() == {
        "event": "link",
        "link": "long",
        "address": "1.2.3.4:8080",
        "source": "dns",
    }
    assert LinkChanged(LinkKind.SHORT, reason="reset").to_json() == {
        "event": "link",
        "link": "short",
        "reason": "reset",
    }
    assert NetworkChanged(NetworkQuality.POOR).to_json() == {"event": "network", "quality": "poor"}
    assert SendStateChanged("c1", SendState.SENDING).to_json() == {
        "event": "send",
        "client_msg_id": "c1",
        "state": "sending",
    }
    assert SendStateChanged("c1", SendState.SENT, msg_id=4).to_json()["msg_id"] == 4
    assert SendStateChanged("c1", SendState.FAILED, reason="x").to_json()["reason"] == "x"
    assert f"{LinkKind.LONG}" == "long" and str(LinkKind.SHORT) == "short"
