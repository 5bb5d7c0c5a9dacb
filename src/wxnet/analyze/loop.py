"""The analyser's packet loop: :class:`_Engine`, the state and methods behind
:class:`wxnet.analyze.engine.Analyzer` (see there for what it does).

Over ~500 lines and with functions over ~60 on purpose: this is the hot loop (every
packet of a capture goes through :meth:`_Engine.run`), written as few, long functions
with locals bound once, because each Python call and attribute lookup per packet costs
measurably (docs/benchmarks.md). Compiled by mypyc when built (``wxnet/_accel.py``);
the same code runs as pure Python otherwise.
"""

from __future__ import annotations

import gc
import mmap
import struct
from collections.abc import Callable, Iterable

from mypy_extensions import mypyc_attr

from wxnet.analyze.capture import CaptureReader
from wxnet.analyze.flows import (
    _END,
    _ETH_IP4,
    _FRAGMENT,
    _LINKTYPE,
    _MALFORMED,
    _MAX_OOO,
    _NOT_IP,
    _TCP,
    _U16,
    _U32,
    Decoded,
    FlowRecord,
    LonglinkPacket,
    Stats,
    _decode,
    _decode_longlink,
    _Dir,
    _Flow,
    _frame_size,
    _server_port,
    _shard_hash,
)
from wxnet.classify import Classifier, DnsMemory, FlowView
from wxnet.proto.sniff import parse_dns

__all__: list[str] = []


@mypyc_attr(allow_interpreted_subclasses=True)
class _Engine:
    """:class:`Analyzer`'s state and loops (a native class when compiled: see
    ``wxnet/_accel.py``)."""

    def __init__(
        self,
        emit: Callable[[FlowRecord], None],
        classifier: Classifier | None = None,
        *,
        client_limit: int = 16384,
        server_limit: int = 4096,
        tcp_idle: float = 600.0,
        udp_idle: float = 120.0,
        linger: float = 5.0,
        max_flows: int = 200_000,
        sweep_every: float = 10.0,
    ) -> None:
        self.emit = emit
        self.classifier = classifier or Classifier()
        self.dns = DnsMemory()
        self.stats = Stats()
        self.client_limit = client_limit
        self.server_limit = server_limit
        self.tcp_idle = tcp_idle
        self.udp_idle = udp_idle
        self.linger = linger
        self.max_flows = max_flows
        self.sweep_every = sweep_every
        # Each flow is in its table twice, under the key seen from either side, with a
        # flag saying whether that key is the client's: one lookup per packet.
        self._tcp_flows: dict[bytes, tuple[_Flow, bool]] = {}
        self._udp_flows: dict[bytes, tuple[_Flow, bool]] = {}
        self._live: dict[int, _Flow] = {}
        self._next_sweep: float | None = None
        # Sharded runs (run_shard): the position of the packet being read, and the sort
        # key of the record being emitted, so shards' records merge into one order.
        self._index = 0
        self._shard = 0
        self._shards = 1  # run_shard: report only flows whose hash is _shard of _shards
        self.emit_tag: tuple[float, int, float, int] = (0.0, 0, 0.0, 0)

    @property
    def live_flows(self) -> int:
        return len(self._live)

    # ----------------------------------------------------------------- packets

    def run(self, packets: Iterable[tuple[float, int, bytes, int]]) -> None:
        """Feed every packet of an iterable (e.g. a :class:`CaptureReader`).

        Same result as calling :meth:`packet` for each, but packets of flows that are
        only being counted (verdict final, nothing left to collect) on plain Ethernet +
        IPv4 take a short path: one struct call, one dict lookup, a few counters.
        (Over 60 lines on purpose: the per-packet loop is inlined, since each call
        saved is measured in the analyser benchmark; docs/benchmarks.md.)
        """
        tcp_flows = self._tcp_flows
        udp_flows = self._udp_flows
        head = _ETH_IP4.unpack_from
        slow = self.packet
        st = self.stats
        n = size_sum = 0
        i = start = self._index  # position of the packet in the capture (sharded runs' order)
        last = st.last_ts
        sweep_at = self._next_sweep if self._next_sweep is not None else float("-inf")
        # Every packet allocates a few short-lived container objects, so the cyclic GC's
        # youngest generation would run every ~700 packets and its older generations scan
        # every live flow; nothing here makes reference cycles. Collect 100x less often
        # while the loop runs (about 15% faster), and restore the thresholds after.
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 70_000), *thresholds[1:])
        try:
            for ts, link, data, wire in packets:
                i += 1
                last = ts
                if link == 1:
                    # IndexError/struct.error: a frame too short for the fixed offsets
                    # read below (48 bytes); the general path then takes it.
                    try:
                        etype, vihl, total, frag, proto, b46, flags = head(data, 0)
                        if etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF:
                            if proto == 6:
                                hit = tcp_flows.get(data[26:38])
                            elif proto == 17:
                                hit = udp_flows.get(data[26:38])
                            else:
                                hit = None
                            if hit is not None:
                                flow, from_client = hit
                                # Bytes: what the IP header says, bounded by the
                                # record's wire length, never less than was captured.
                                end = 14 + total
                                size = end if end < wire else wire
                                if size < len(data):
                                    size = len(data)
                                if end > len(data):
                                    end = len(data)
                                if proto == 6:
                                    # The same header checks as packet(): a bad one takes
                                    # the general path, which counts it as malformed.
                                    doff = (b46 >> 2) & 0x3C
                                    if doff >= 20 and 34 + doff <= end:
                                        n += 1
                                        size_sum += size
                                        if flow.quiet or (34 + doff == end and not flags & 0x07):
                                            # Only counts (verdict final and nothing left
                                            # to collect, or no payload and no SYN/FIN/RST).
                                            _count(flow, from_client, size, ts)
                                            if flags & 0x05:
                                                _tcp_end(flow, from_client, flags, ts)
                                        else:
                                            _tcp(
                                                self,
                                                flow,
                                                from_client,
                                                data,
                                                34,
                                                doff,
                                                end,
                                                ts,
                                                size,
                                            )
                                        if ts >= sweep_at:
                                            self._index = i
                                            sweep_at = _maybe_sweep(self, ts)
                                        continue
                                elif end >= 42:
                                    n += 1
                                    size_sum += size
                                    if flow.quiet:
                                        _count(flow, from_client, size, ts)
                                    else:
                                        _udp(self, flow, from_client, data[42:end], ts, size)
                                    if ts >= sweep_at:
                                        self._index = i
                                        sweep_at = _maybe_sweep(self, ts)
                                    continue
                        elif etype == 0x8100 or etype == 0x86DD or etype == 0x88A8:
                            size = _fast_more(self, data, ts, wire)
                            if size >= 0:
                                n += 1
                                size_sum += size
                                if ts >= sweep_at:
                                    self._index = i
                                    sweep_at = _maybe_sweep(self, ts)
                                continue
                    except (IndexError, struct.error):
                        pass
                self._index = i
                slow(ts, link, data, wire)
                if self._next_sweep is not None:
                    sweep_at = self._next_sweep
        finally:
            gc.set_threshold(*thresholds)
            st.packets += n
            st.bytes += size_sum
            self._index = i
            if i != start:
                st.last_ts = last

    def run_capture(self, reader: CaptureReader) -> None:
        """Feed every packet of a capture: the same as :meth:`run` over ``reader``, but
        the records of a plain (mapped) Ethernet pcap file are cut here, from the mapped
        bytes (:func:`_run_mapped`): a packet is read at fixed offsets, and its bytes are
        copied only when its flow still collects them, so the packets of settled flows
        (and in a sharded run, of other shards' flows) cost a few integer reads."""
        layout = reader.mapped_pcap()
        if layout is None:
            self.run(reader)
            return
        buf, pos, little, div, link, limit = layout
        if link == 1:
            pos = _run_mapped(self, buf, pos, little, div, limit)
        # The rest (another link type; the end of the file, or a damaged record, with
        # the reader's own offsets and errors).
        self.run(reader.pcap_from(pos))

    def run_shard(
        self, packets: Iterable[tuple[float, int, bytes, int]], shard: int, shards: int
    ) -> None:
        """Feed every packet of a capture, but report only the flows of one shard: those
        whose symmetric 5-tuple hash is ``shard`` modulo ``shards``.

        Every shard reads every packet and keeps every flow in its table, so its clock,
        sweeps, flow table (``max_flows``, evictions) and :attr:`stats` are exactly those
        of a single :meth:`run`. Another shard's flow is marked at its first packet as
        settled (nothing collected, never classified, never reported), so its later
        packets only take the short path's counters; UDP flows to or from port 53 are
        processed in full in every shard, so each shard's :class:`DnsMemory` learns
        every answer. Each emitted record's :attr:`emit_tag` orders it among all shards'
        records as a single run would emit it (see :mod:`wxnet.analyze.parallel`).
        """
        self._shard, self._shards = shard, shards
        try:
            if isinstance(packets, CaptureReader):
                self.run_capture(packets)
            else:
                self.run(packets)
        finally:
            self._shard, self._shards = 0, 1

    def tick(self, now: float) -> None:
        """Time has passed with no packet (live capture): report the flows that ended or
        idled out by ``now``."""
        if self._next_sweep is not None and now >= self._next_sweep:
            self.stats.last_ts = max(self.stats.last_ts, now)
            _sweep(self, now)

    def packet(self, ts: float, linktype: int, data: bytes, wire_len: int = 0) -> None:
        """Account one captured frame. Malformed frames are counted, never raised."""
        st = self.stats
        st.packets += 1
        # Until the IP header is read, count what was captured (a record's claimed wire
        # length alone is not trusted: a damaged record may claim gigabytes).
        st.bytes += len(data)
        if st.first_ts is None:
            st.first_ts = ts
            self._next_sweep = ts + self.sweep_every
        st.last_ts = ts
        d = _decode(linktype, data)
        if type(d) is int:
            _not_a_flow(self, d, linktype, ts)
            return
        assert not isinstance(d, int)
        size = _frame_size(len(data), wire_len, d[8])
        st.bytes += size - len(data)
        _flow_packet(self, ts, data, size, d)
        if self._next_sweep is not None and ts >= self._next_sweep:
            _sweep(self, ts)

    # ------------------------------------------------------------- lifecycle

    def finish(self) -> None:
        """Emit every live flow (end of capture, or after a read error)."""
        flows = sorted(self._live.values(), key=lambda f: f.first)
        self._live.clear()
        self._tcp_flows.clear()
        self._udp_flows.clear()
        for f in flows:
            self.emit_tag = (_END, 2, f.first, f.index)
            _emit(self, f)


#: Bytes of a record read at fixed offsets by :func:`_run_mapped`: its 16-byte header
#: and the first 112 of the packet (Ethernet, two VLAN tags, IPv6 or IPv4 and the TCP
#: header's first 14 bytes fit; anything longer takes the general path).
_HEAD = 128


def _run_mapped(
    self: _Engine, buf: bytes | mmap.mmap, pos: int, little: bool, div: float, limit: int
) -> int:
    """:meth:`_Engine.run_capture`'s loop over the records of a mapped Ethernet pcap
    file from ``pos``; returns the position of the first record it did not take (the
    end of the file, or a record that is damaged: the reader reports it).

    The same effect as :meth:`_Engine.run` over the reader's packets, but each record's
    header and first bytes are read as one short slice; the packet's bytes are sliced
    only for a flow that still collects them, or for the general path (a flow's first
    packet, anything unusual). In a sharded run the first packet of another shard's
    flow (not DNS) makes it settled here without decoding it further, as ``_claim``
    would. Over 60 lines on purpose (one inlined loop, like :meth:`_Engine.run`)."""
    tcp_flows = self._tcp_flows
    udp_flows = self._udp_flows
    st = self.stats
    nbuf = len(buf)
    n = size_sum = 0
    i = start = self._index
    last = st.last_ts
    shard, shards = self._shard, self._shards
    sweep_at = self._next_sweep if self._next_sweep is not None else float("-inf")
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 70_000), *thresholds[1:])
    try:
        while nbuf - pos >= 16:
            h: bytes = buf[pos : pos + _HEAD]
            if little:
                sec = h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)
                frac = h[4] | (h[5] << 8) | (h[6] << 16) | (h[7] << 24)
                incl = h[8] | (h[9] << 8) | (h[10] << 16) | (h[11] << 24)
                wire = h[12] | (h[13] << 8) | (h[14] << 16) | (h[15] << 24)
            else:
                sec = (h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]
                frac = (h[4] << 24) | (h[5] << 16) | (h[6] << 8) | h[7]
                incl = (h[8] << 24) | (h[9] << 16) | (h[10] << 8) | h[11]
                wire = (h[12] << 24) | (h[13] << 16) | (h[14] << 8) | h[15]
            p0 = pos + 16
            if incl > limit or p0 + incl > nbuf:
                break  # damaged or cut short: the reader reports it
            pos = p0 + incl
            ts = sec + frac / div
            i += 1
            last = ts
            # ---- fixed offsets (relative to the packet: h[16 + x]); proto -1: general path
            lim = incl if incl < _HEAD - 16 else _HEAD - 16
            proto = -1
            off = 14
            ip_end = l4 = ks = 0
            if lim >= 34:
                etype = (h[28] << 8) | h[29]
                while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
                    if off + 4 > lim:
                        etype = 0
                        break
                    etype = (h[16 + off + 2] << 8) | h[16 + off + 3]
                    off += 4
                if etype == 0x0800:
                    b = 16 + off
                    if (
                        off + 20 <= lim
                        and h[b] == 0x45
                        and not ((h[b + 6] << 8) | h[b + 7]) & 0x3FFF
                    ):
                        total = (h[b + 2] << 8) | h[b + 3]
                        if total >= 20:
                            proto = h[b + 9]
                            ip_end = off + total
                            l4 = off + 20
                            ks = off + 12
                elif etype == 0x86DD and off + 40 <= lim:
                    b = 16 + off
                    proto = h[b + 6]
                    ip_end = off + 40 + ((h[b + 4] << 8) | h[b + 5])
                    l4 = off + 40
                    ks = off + 8
            end = ip_end if ip_end < incl else incl
            size = ip_end if ip_end < wire else wire
            if size < incl:
                size = incl
            doff = flags = 0
            if proto == 6:
                if l4 + 14 <= lim and end - l4 >= 20:
                    doff = (h[16 + l4 + 12] >> 4) * 4
                    flags = h[16 + l4 + 13]
                    if doff < 20 or l4 + doff > end:
                        proto = -1
                else:
                    proto = -1
            elif proto == 17:
                if l4 + 4 > lim or end - l4 < 8:
                    proto = -1
            else:
                proto = -1
            if proto != -1:
                key = h[16 + ks : 16 + l4 + 4]
                table = tcp_flows if proto == 6 else udp_flows
                hit = table.get(key)
                if hit is None and shards > 1 and st.first_ts is not None:
                    sp = (h[16 + l4] << 8) | h[16 + l4 + 1]
                    dp = (h[16 + l4 + 2] << 8) | h[16 + l4 + 3]
                    if proto == 6 or (sp != 53 and dp != 53):
                        half = (l4 - ks) >> 1
                        if half == 4:
                            b = 16 + ks
                            addrs = (
                                (h[b] << 24) | (h[b + 1] << 16) | (h[b + 2] << 8) | h[b + 3]
                            ) ^ ((h[b + 4] << 24) | (h[b + 5] << 16) | (h[b + 6] << 8) | h[b + 7])
                        else:
                            addrs = int.from_bytes(key[:half], "big") ^ int.from_bytes(
                                key[half : 2 * half], "big"
                            )
                        if _shard_hash(addrs, sp ^ dp, shards) != shard:
                            # Another shard's flow: settled at once (``_claim``), counted only.
                            rkey = key[half : 2 * half] + key[:half] + key[-2:] + key[-4:-2]
                            self._index = i
                            st.last_ts = ts
                            flow = _new(self, key, rkey, proto == 6, "", sp, "", dp, ts, True)
                            hit = (flow, True)
                if hit is not None:
                    flow, from_client = hit
                    n += 1
                    size_sum += size
                    if proto == 6:
                        if flow.quiet or (l4 + doff == end and not flags & 0x07):
                            _count(flow, from_client, size, ts)
                            if flags & 0x05:
                                _tcp_end(flow, from_client, flags, ts)
                        else:
                            data: bytes = buf[p0 : p0 + end]
                            _tcp(self, flow, from_client, data, l4, doff, end, ts, size)
                    elif flow.quiet:
                        _count(flow, from_client, size, ts)
                    else:
                        payload: bytes = buf[p0 + l4 + 8 : p0 + end]
                        _udp(self, flow, from_client, payload, ts, size)
                    if ts >= sweep_at:
                        self._index = i
                        sweep_at = _maybe_sweep(self, ts)
                    continue
            self._index = i
            frame: bytes = buf[p0 : p0 + incl]
            self.packet(ts, 1, frame, wire)
            if self._next_sweep is not None:
                sweep_at = self._next_sweep
    finally:
        gc.set_threshold(*thresholds)
        st.packets += n
        st.bytes += size_sum
        self._index = i
        if i != start:
            st.last_ts = last
    return pos


def _fast_more(self: _Engine, data: bytes, ts: float, wire: int) -> int:
    """:meth:`run`'s short path for Ethernet frames of known flows with VLAN tags
    and/or IPv6 (TCP or UDP right after the fixed header; IPv4 without options and
    unfragmented): the same effect as :meth:`packet`, minus the stats it keeps per
    packet, which the caller keeps. Returns the packet's size, or -1 when the frame
    must take the general path (unknown flow, anything unusual or malformed). Inlined,
    and so over 60 lines, for the same reason as :meth:`run`."""
    etype = (data[12] << 8) | data[13]
    off = 14
    while etype in (0x8100, 0x88A8, 0x9100):
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    n = len(data)
    if etype == 0x0800:
        if data[off] != 0x45 or ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF:
            return -1
        ip_end = off + ((data[off + 2] << 8) | data[off + 3])
        proto = data[off + 9]
        l4 = off + 20
        key = data[off + 12 : l4 + 4]
    elif etype == 0x86DD:
        if n < off + 40:
            return -1
        ip_end = off + 40 + ((data[off + 4] << 8) | data[off + 5])
        proto = data[off + 6]
        l4 = off + 40
        key = data[off + 8 : l4 + 4]
    else:
        return -1
    size = _frame_size(n, wire, ip_end)
    end = ip_end if ip_end < n else n
    if proto == 6:
        if end - l4 < 20:
            return -1
        doff = (data[l4 + 12] >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return -1
        hit = self._tcp_flows.get(key)
        if hit is None:
            return -1
        flow, from_client = hit
        if flow.quiet:  # what _tcp() does for a flow with nothing left to collect
            _count(flow, from_client, size, ts)
            flags = data[l4 + 13]
            if flags & 0x05:
                _tcp_end(flow, from_client, flags, ts)
        else:
            _tcp(self, flow, from_client, data, l4, doff, end, ts, size)
    elif proto == 17:
        if end - l4 < 8:
            return -1
        hit = self._udp_flows.get(key)
        if hit is None:
            return -1
        _udp(self, hit[0], hit[1], data[l4 + 8 : end], ts, size)
    else:
        return -1
    return size


def _maybe_sweep(self: _Engine, ts: float) -> float:
    """Sweep if due; return the time of the next sweep."""
    self.stats.last_ts = ts
    if self._next_sweep is not None and ts >= self._next_sweep:
        _sweep(self, ts)
    return self._next_sweep if self._next_sweep is not None else ts


def _count(flow: _Flow, from_client: bool, size: int, ts: float) -> None:
    """A packet that only counts: its direction's packets and bytes, and the flow's
    last time (the whole work for a flow with nothing left to collect)."""
    flow.last = ts
    if from_client:
        flow.c_pkts += 1
        flow.c_bytes += size
    else:
        flow.s_pkts += 1
        flow.s_bytes += size


def _tcp_end(flow: _Flow, from_client: bool, flags: int, ts: float) -> None:
    if flags & 0x01:
        if from_client:
            flow.c_fin = True
        else:
            flow.s_fin = True
    if (flags & 0x04 or (flow.c_fin and flow.s_fin)) and flow.end_ts is None:
        flow.end_ts = ts


def _not_a_flow(self: _Engine, why: int, linktype: int, ts: float) -> None:
    st = self.stats
    if why == _MALFORMED:
        st.malformed += 1
    elif why == _FRAGMENT:
        st.fragments += 1
    elif why == _LINKTYPE:
        st.linktypes.add(linktype)
        st.not_ip += 1
    elif why == _NOT_IP:
        st.not_ip += 1
    else:
        st.other_transport += 1
        if self._next_sweep is not None and ts >= self._next_sweep:
            _sweep(self, ts)


def _flow_packet(self: _Engine, ts: float, data: bytes, size: int, d: Decoded) -> _Flow:
    """The flow work for one decoded TCP/UDP packet (the general path)."""
    proto, key, src, dst, ports, l4, doff, end, _ip_end, ntop = d
    if proto == _TCP:
        hit = self._tcp_flows.get(key)
        if hit is not None:
            flow, from_client = hit
        else:
            rkey = dst + src + ports[2:] + ports[:2]
            flags = data[l4 + 13]
            sp, dp = _U16(ports, 0)[0], _U16(ports, 2)[0]
            # SYN+ACK comes from the server; without a handshake guess by port.
            if (flags & 0x12) == 0x12 or ((flags & 0x02) == 0 and _server_port(sp, dp)):
                flow = _new(self, rkey, key, True, ntop(dst), dp, ntop(src), sp, ts)
                from_client = False
            else:
                flow = _new(self, key, rkey, True, ntop(src), sp, ntop(dst), dp, ts)
                from_client = True
        _tcp(self, flow, from_client, data, l4, doff, end, ts, size)
    else:
        hit = self._udp_flows.get(key)
        if hit is not None:
            flow, from_client = hit
        else:
            rkey = dst + src + ports[2:] + ports[:2]
            sp, dp = _U16(ports, 0)[0], _U16(ports, 2)[0]
            if _server_port(sp, dp):
                flow = _new(self, rkey, key, False, ntop(dst), dp, ntop(src), sp, ts)
                from_client = False
            else:
                flow = _new(self, key, rkey, False, ntop(src), sp, ntop(dst), dp, ts)
                from_client = True
        _udp(self, flow, from_client, data[l4 + 8 : end], ts, size)
    return flow


def _new(
    self: _Engine,
    key: bytes,
    rkey: bytes,
    tcp: bool,
    client: str,
    cport: int,
    server: str,
    sport: int,
    ts: float,
    settled: bool = False,
) -> _Flow:
    """A new flow in the tables (``settled``: another shard's, known to be so)."""
    flow = _Flow(key, rkey, tcp, client, cport, server, sport, ts)
    flow.index = self._index
    if settled:
        _settle(flow)
    elif self._shards > 1:
        _claim(self, flow, key)
    table = self._tcp_flows if tcp else self._udp_flows
    table[key] = (flow, True)
    table[rkey] = (flow, False)
    self._live[id(flow)] = flow
    self.stats.flows += 1
    live = len(self._live)
    if live > self.stats.max_live_flows:
        self.stats.max_live_flows = live
    if live > self.max_flows:
        _evict_oldest(self, ts)
    return flow


def _claim(self: _Engine, flow: _Flow, key: bytes) -> None:
    """Sharded runs: a new flow of another shard is settled at once (counted only),
    except DNS over UDP, which every shard processes (unclassified) to learn the
    answers."""
    half = (len(key) - 4) >> 1
    addrs = int.from_bytes(key[:half], "big") ^ int.from_bytes(key[half : 2 * half], "big")
    ports = _U16(key, 2 * half)[0] ^ _U16(key, 2 * half + 2)[0]
    if _shard_hash(addrs, ports, self._shards) == self._shard:
        return
    flow.mine = False
    if flow.tcp or (flow.cport != 53 and flow.sport != 53):
        _settle(flow)
    else:
        flow.final = True  # processed only for the answers it brings: never classified


def _settle(flow: _Flow) -> None:
    """Another shard's flow (not DNS): counted only, never classified or reported."""
    flow.mine = False
    flow.final = flow.quiet = True
    flow.c.done = flow.s.done = True


def _tcp(
    self: _Engine,
    flow: _Flow,
    from_client: bool,
    data: bytes,
    l4: int,
    doff: int,
    end: int,
    ts: float,
    size: int,
) -> None:
    flow.last = ts
    flags = data[l4 + 13]
    if from_client:
        flow.c_pkts += 1
        flow.c_bytes += size
        d = flow.c
        if flags & 0x01:
            flow.c_fin = True
    else:
        flow.s_pkts += 1
        flow.s_bytes += size
        d = flow.s
        if flags & 0x01:
            flow.s_fin = True
    if (flags & 0x04 or (flow.c_fin and flow.s_fin)) and flow.end_ts is None:
        flow.end_ts = ts
    if d.done:
        if flow.final and flow.c.done and flow.s.done:
            flow.quiet = True
        return
    seq = _U32(data, l4 + 4)[0]
    if flags & 0x02:  # SYN: data starts at seq + 1
        d.next = (seq + 1) & 0xFFFFFFFF
        return
    start = l4 + doff
    if start >= end:
        return
    if d.next is None:
        d.next = seq  # joined mid-stream: take the first segment as the start
    payload = data[start:end]
    if not _append(d, seq, payload, self.client_limit if from_client else self.server_limit):
        return
    if from_client and not flow.final:
        _classify(self, flow)


def _append(d: _Dir, seq: int, payload: bytes, limit: int) -> bool:
    """Add a segment in order; True when the in-order bytes grew."""
    nxt = d.next
    assert nxt is not None
    delta = (seq - nxt) & 0xFFFFFFFF
    if delta >= 0x80000000:  # starts before what we have: retransmission/overlap
        skip = (nxt - seq) & 0xFFFFFFFF
        if skip >= len(payload):
            return False
        payload = payload[skip:]
        delta = 0
    if delta:
        if len(d.ooo) < _MAX_OOO and delta < limit:
            d.ooo.setdefault(seq, payload)
        return False
    room = limit - len(d.buf)
    d.buf += payload[:room]
    nxt = (nxt + len(payload)) & 0xFFFFFFFF
    while d.ooo:
        seg = d.ooo.pop(nxt, None)
        if seg is None:
            # Drop held segments that the stream has passed.
            for s in [s for s in d.ooo if ((s - nxt) & 0xFFFFFFFF) >= 0x80000000]:
                held = d.ooo.pop(s)
                over = (nxt - s) & 0xFFFFFFFF
                if over < len(held):
                    d.ooo[nxt] = held[over:]
            if nxt not in d.ooo:
                break
            continue
        d.buf += seg[: limit - len(d.buf)]
        nxt = (nxt + len(seg)) & 0xFFFFFFFF
    d.next = nxt
    if len(d.buf) >= limit:
        d.done = True
        d.ooo.clear()
    return True


def _udp(
    self: _Engine, flow: _Flow, from_client: bool, payload: bytes, ts: float, size: int
) -> None:
    flow.last = ts
    if from_client:
        flow.c_pkts += 1
        flow.c_bytes += size
        if not flow.c.buf and payload and not flow.final:
            flow.c.buf += payload[: self.client_limit]
            _classify(self, flow)
    else:
        flow.s_pkts += 1
        flow.s_bytes += size
        if not flow.s.buf and payload:
            flow.s.buf += payload[: self.server_limit]
        if flow.sport == 53 and payload:
            _learn_dns(self, flow.client, payload, ts)
    if flow.final and flow.sport != 53:
        flow.quiet = True


def _learn_dns(self: _Engine, client: str, payload: bytes, ts: float) -> None:
    msg = parse_dns(payload)
    if msg is None or not msg.is_response or msg.rcode != 0:
        return
    for q in msg.questions:
        answers = msg.addresses_for(q)
        for addr, ttl in answers:
            self.dns.learn(client, q, (addr,), ttl, ts)
        self.stats.dns_answers += len(answers)


def _classify(self: _Engine, flow: _Flow) -> None:
    view = FlowView(
        "tcp" if flow.tcp else "udp",
        flow.client,
        flow.cport,
        flow.server,
        flow.sport,
        bytes(flow.c.buf),
        bytes(flow.s.buf),
    )
    # Spoofing can only be judged for clients whose DNS answers the capture holds.
    v = self.classifier.classify(
        view, self.dns, flow.last, spoof_check=self.dns.knows_client(flow.client)
    )
    flow.verdict = v
    if v.final or flow.c.done:
        flow.final = True
        # Keep the server's first bytes only where we will decode them.
        if not (v.evidence and v.evidence[0].kind == "longlink-2014"):
            flow.s.done = True
            flow.s.buf = bytearray()
            flow.s.ooo.clear()
        flow.c.done = True
        flow.c.ooo.clear()
        flow.quiet = flow.s.done and (flow.tcp or flow.sport != 53)


def _sweep(self: _Engine, now: float) -> None:
    self._next_sweep = now + self.sweep_every
    gone = []
    for f in self._live.values():
        if f.end_ts is not None:
            if now - f.last >= self.linger:
                gone.append(f)
        elif now - f.last >= (self.tcp_idle if f.tcp else self.udp_idle):
            gone.append(f)
    idx = float(self._index)
    for f in gone:
        _drop(self, f)
        self.emit_tag = (idx, 1, 0.0, f.index)
        _emit(self, f)


def _drop(self: _Engine, f: _Flow) -> None:
    table = self._tcp_flows if f.tcp else self._udp_flows
    del table[f.key]
    # Two flows may share a key pair only if one is a reversed duplicate; keep safe.
    if table.get(f.rkey, (None, False))[0] is f:
        del table[f.rkey]
    del self._live[id(f)]


def _evict_oldest(self: _Engine, now: float) -> None:
    """Over ``max_flows``: emit the least recently active tenth."""
    ordered = sorted(self._live.values(), key=lambda f: f.last)
    idx = float(self._index)
    for f in ordered[: max(1, len(ordered) // 10)]:
        _drop(self, f)
        self.stats.evicted += 1
        self.emit_tag = (idx, 0, f.last, f.index)
        _emit(self, f)


def _emit(self: _Engine, flow: _Flow) -> None:
    if not flow.mine:
        return
    if not flow.final:
        _classify(self, flow)
    verdict = flow.verdict
    assert verdict is not None
    longlink: tuple[LonglinkPacket, ...] = ()
    if any(e.kind == "longlink-2014" for e in verdict.evidence):
        longlink = _decode_longlink(bytes(flow.c.buf), "c2s") + _decode_longlink(
            bytes(flow.s.buf), "s2c"
        )
    self.emit(
        FlowRecord(
            "tcp" if flow.tcp else "udp",
            flow.client,
            flow.cport,
            flow.server,
            flow.sport,
            flow.first,
            flow.last,
            verdict,
            flow.c_pkts,
            flow.s_pkts,
            flow.c_bytes,
            flow.s_bytes,
            longlink,
        )
    )
