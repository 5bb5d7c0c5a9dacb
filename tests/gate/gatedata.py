"""Shared data for the gateway tests: a fixed app catalogue (data, not a classifier)."""

from __future__ import annotations

from wxnet.gate.apps import AppInfo

CATALOG = {
    "wechat": AppInfo(
        "wechat",
        "WeChat",
        tcp_ports=(80, 443, 8080),
        dependencies=("android-connectivity",),
        operator_ranges=("198.51.100.0/25", "2001:db8:77::/48"),
        newgetdns_ports=(80,),
        newgetdns_paths=("/cgi-bin/micromsg-bin/newgetdns",),
    ),
    "qq": AppInfo("qq", "QQ", tcp_ports=(80, 443, 8080, 14000)),
    "android-connectivity": AppInfo("android-connectivity", "Android checks", tcp_ports=(80, 443)),
    "apple-push": AppInfo("apple-push", "Apple push", tcp_ports=(443, 5223)),
    "google-push": AppInfo("google-push", "Google push", tcp_ports=(5228,)),
}

POLICY = """\
[gate]
lan = ["lan0"]
upstreams = ["192.0.2.53", "[2001:db8::53]:5353"]
table = "wxtest"
timezone = "Asia/Shanghai"
spoof = "strict"

[groups.staff]
mode = "allow-only"
apps = ["wechat"]
also = ["apple-push"]
schedule = ["mon-fri 09:00-18:00"]

[groups.kids]
mode = "block"
apps = ["wechat", "qq"]

[[devices]]
name = "alice"
mac = "02:00:00:00:00:01"
group = "kids"

[[devices]]
name = "office"
subnet = "10.1.0.0/24"
group = "staff"

[[devices]]
name = "boss"
ip = "10.1.0.9"
group = "kids"
"""
