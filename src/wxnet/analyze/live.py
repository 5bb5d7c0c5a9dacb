"""Packets from a network interface (Linux AF_PACKET), for ``wxnet analyze --live``.

An adapter only: it reads frames from the kernel and hands them to the sans-IO
:class:`~wxnet.analyze.engine.Analyzer` as ``(time, link type, bytes, wire length)``
tuples, the same as the file readers. Needs root (CAP_NET_RAW).

* The link type comes from the interface's hardware type (``/sys/class/net/IFACE/type``):
  Ethernet and loopback frames are Ethernet (1); interfaces without a link header
  (tun, wireguard) are raw IP (101).
* A BPF filter (tcpdump syntax) is compiled with libpcap (``pcap_compile``, loaded with
  ctypes; Debian ``libpcap0.8``) and attached to the socket before it is bound, so no
  unfiltered packet is ever queued.
* On a loopback interface every packet passes twice (sent, then received): the sent copy
  is skipped.
* Frames are read whole (up to 256 KiB; a longer one is cut and its wire length kept).
  The kernel's queue is ``rcvbuf`` bytes; packets it had to drop because the analyser
  fell behind are counted (``PACKET_STATISTICS``) and reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import select
import socket
import struct
import time
from pathlib import Path

__all__ = ["LiveError", "LiveSource", "compile_bpf"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
#: Largest frame read whole.
MAX_FRAME = 1 << 18
#: Default kernel receive queue for the socket.
RCVBUF = 8 << 20


class LiveError(Exception):
    """The interface cannot be opened or the filter does not compile."""


class _BpfInsn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


def _libpcap() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap")
    for candidate in (name, "libpcap.so.1", "libpcap.so.0.8", "libpcap.so"):
        if not candidate:
            continue
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    raise LiveError("--bpf needs libpcap (Debian: apt-get install libpcap0.8)")


def compile_bpf(
    expr: str, linktype: int, snaplen: int = MAX_FRAME
) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump-style filter to classic BPF: ``(code, jt, jf, k)`` instructions."""
    lib = _libpcap()
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    handle = lib.pcap_open_dead(linktype, snaplen)
    if not handle:
        raise LiveError("libpcap could not open a filter compiler")
    prog = _BpfProgram()
    try:
        if lib.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) != 0:
            msg = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
            raise LiveError(f"bad --bpf filter {expr!r}: {msg}")
        out = [
            (prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
            for i in range(prog.bf_len)
        ]
        lib.pcap_freecode(ctypes.byref(prog))
        return out
    finally:
        lib.pcap_close(handle)


def _hw_type(iface: str) -> int:
    try:
        return int((Path("/sys/class/net") / iface / "type").read_text().strip())
    except (OSError, ValueError):
        raise LiveError(f"no such network interface: {iface}") from None


class LiveSource:
    """An AF_PACKET socket on ``iface``; :meth:`read` returns the frames that arrived."""

    def __init__(self, iface: str, bpf: str | None = None, rcvbuf: int = RCVBUF) -> None:
        if "/" in iface or not iface or iface.startswith("."):
            raise LiveError(f"no such network interface: {iface}")
        hw = _hw_type(iface)
        self.iface = iface
        self.loopback = hw == ARPHRD_LOOPBACK
        self.linktype = (
            1
            if hw in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
            else 101
            if hw
            in (
                ARPHRD_NONE,
                65534,
            )
            else 1
        )
        self.kernel_drops = 0
        self.kernel_packets = 0
        try:
            # Protocol 0: nothing is queued until bind(), after the filter is attached.
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveError("--live needs root (CAP_NET_RAW)") from None
        except OSError as exc:
            raise LiveError(f"cannot open a packet socket: {exc.strerror or exc}") from None
        try:
            if bpf:
                insns = compile_bpf(bpf, self.linktype)
                buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
                fprog = struct.pack("HP", len(insns), ctypes.addressof(buf))
                self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((iface, ETH_P_ALL))
        except OSError as exc:
            self._sock.close()
            raise LiveError(f"cannot capture on {iface}: {exc.strerror or exc}") from None
        except LiveError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._buf = bytearray(MAX_FRAME)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: float, limit: int = 4096) -> list[tuple[float, int, bytes, int]]:
        """The frames that arrive within ``timeout`` seconds (at most ``limit``; returns
        as soon as any arrived). Empty when none did."""
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not ready:
            return []
        out: list[tuple[float, int, bytes, int]] = []
        buf = self._buf
        view = memoryview(buf)
        link = self.linktype
        recv = self._sock.recvfrom_into
        while len(out) < limit:
            try:
                n, addr = recv(buf, MAX_FRAME, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            if self.loopback and addr[2] == PACKET_OUTGOING:
                continue
            out.append((time.time(), link, bytes(view[: min(n, MAX_FRAME)]), n))
        return out

    def update_drops(self) -> int:
        """Add the kernel's counters since the last call (reading resets them)."""
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self.kernel_drops
        packets, drops = struct.unpack("II", raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return self.kernel_drops

    def close(self) -> None:
        self._sock.close()
