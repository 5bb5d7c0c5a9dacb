"""The capture analyser's core: packets in, labelled flow records out.

Sans-IO: :meth:`Analyzer.packet` takes one captured frame (time, link type, bytes) and
:meth:`Analyzer.finish` flushes; finished flows go to the ``emit`` callback as
:class:`FlowRecord` values. Memory is bounded by the live flows: a flow is emitted and
forgotten when it ends (TCP FIN both ways or RST, after ``linger`` seconds), when it
has been idle for ``tcp_idle``/``udp_idle`` seconds of capture time, or, beyond
``max_flows`` live flows, the least recently active ones first. Each direction keeps
at most ``client_limit``/``server_limit`` payload bytes, and only until the verdict is
final.

Decoding: link types Ethernet (1, with 802.1Q/802.1ad VLAN tags), Linux cooked SLL
(113) and SLL2 (276), raw IP (101, 12, 14, 228, 229) and BSD loopback (0); IPv4
(fragments: only the first carries ports; later ones count towards no flow) and IPv6
(extension headers walked); TCP with in-order reassembly of the first bytes of each
direction (out-of-order segments held until the gap fills, bounded); UDP. DNS answers
(UDP 53) are remembered per client so later flows to those addresses are labelled "by
DNS".
"""

from __future__ import annotations

from wxnet.analyze.flows import FlowRecord, LonglinkPacket, Stats, _shard_hash
from wxnet.analyze.loop import _Engine

__all__ = ["Analyzer", "FlowRecord", "LonglinkPacket", "Stats", "_shard_hash"]


class Analyzer(_Engine):
    """Feed packets, get flow records. Sans-IO; time comes from the packets.

    The state and loops are :class:`wxnet.analyze.loop._Engine` (compiled when built);
    this is an ordinary Python class over it, so an instance's methods can be replaced
    like any Python object's (the tests count calls).
    """
