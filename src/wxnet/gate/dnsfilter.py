"""The DNS filter: policy decisions on queries and answers (sans-IO core).

``DnsFilter.on_query`` looks at a query from a LAN client and says either *answer
now* (the name is outside the client's policy: NXDOMAIN, REFUSED or the configured
address) or *forward* it upstream. ``DnsFilter.on_answer`` takes the upstream answer
and returns the reply for the client plus the addresses that must be in the nftables
sets before the reply is released (the adapter in :mod:`wxnet.gate.service` adds
them, waits, then sends). No I/O here; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wxnet.gate.policy import ALLOW_ONLY, Group, Policy
from wxnet.gate.records import FlowRecord
from wxnet.gate.ruleset import dns_set
from wxnet.proto.dnswire import (
    NXDOMAIN,
    QTYPE_CNAME,
    REFUSED,
    SERVFAIL,
    DnsWireError,
    Question,
    Record,
    address_reply,
    answer_chain,
    error_reply,
    parse_query,
    qtype_name,
    rcode_name,
    rcode_of,
)

__all__ = ["Answer", "Attested", "DnsFilter", "Forward", "Learned", "MalformedQuery", "Reply"]

MAX_CHAIN = 16  # CNAME hops followed from the question


class MalformedQuery(ValueError):
    """The bytes are not a DNS query we can act on (the adapter drops them)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the client now with ``data``."""

    data: bytes
    record: FlowRecord


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``data`` upstream, then call :meth:`DnsFilter.on_answer` with the context."""

    data: bytes
    qid: int
    name: str
    app: str | None
    client: str
    client_port: int
    transport: str
    device: str
    group: str | None
    qend: int = 0  # where the question ends in ``data``


@dataclass(frozen=True, slots=True)
class Learned:
    name: str
    addresses: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class Attested:
    """An address the DNS filter's answer chain admits for a group.

    ``kind``: ``"dns"`` (every name of the chain up to it belongs to an allowed app:
    admitted in the kernel) or ``"cdn"`` (reached through a CNAME to a name of no
    allowed app, such as a shared CDN: never in the kernel sets; the inspector passes
    its flows only when their SNI/Host names an allowed name)."""

    group: str
    app: str
    address: str
    kind: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The client's reply and what must happen before it is sent."""

    data: bytes
    elements: tuple[tuple[str, str, int], ...]  # (set, address, timeout) for the nft sets
    learned: tuple[Learned, ...]  # for the DnsMemory
    record: FlowRecord
    attested: tuple[Attested, ...] = ()


class DnsFilter:
    """Policy decisions for DNS (one instance per gateway).

    Args:
        policy: the loaded policy.
        app_for_name: which app a DNS name belongs to (``Classifier.app_for_name``).
        labels: app id -> display name, for records.
    """

    def __init__(
        self,
        policy: Policy,
        app_for_name: Callable[[str], str | None],
        labels: dict[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.app_for_name = app_for_name
        self.labels = labels or {}
        self.policed_apps = {a for g in policy.groups.values() for a in g.effective_apps}
        # (client, mac) -> (device, group, valid until): schedules change on minute
        # boundaries, so a lookup holds until the next one.
        self._groups: dict[tuple[str, str | None], tuple[str, Group | None, float]] = {}
        # Per group, built once (the policy of a filter never changes): its allowed
        # apps, and the name of its DNS set per app.
        self._allowed = {g.name: frozenset(g.effective_apps) for g in policy.groups.values()}
        self._dns_sets = {
            (g.name, a): dns_set(g.name, a)
            for g in policy.groups.values()
            for a in g.effective_apps
        }

    def group_for(self, client: str, mac: str | None, now: float) -> tuple[str, Group | None]:
        key = (client, mac)
        hit = self._groups.get(key)
        if hit is not None and now < hit[2] and now >= hit[2] - 60.0:
            return hit[0], hit[1]
        device, group = self.policy.group_for(client, mac, now, mac_known=mac is not None)
        if len(self._groups) > 65536:
            self._groups.clear()
        self._groups[key] = (device, group, (now // 60.0 + 1) * 60.0)
        return device, group

    def _label(self, app: str | None) -> str:
        if app is None:
            return "unknown"
        return self.labels.get(app, app)

    def allowed(self, group: Group | None, app: str | None) -> bool:
        if group is None:
            return True
        if group.mode == ALLOW_ONLY:
            return app is not None and app in group.effective_apps
        return app is None or app not in group.effective_apps

    def on_query(
        self,
        data: bytes,
        client: str,
        client_port: int,
        now: float,
        mac: str | None = None,
        transport: str = "udp",
    ) -> Reply | Forward:
        """Decide about one query.

        Raises:
            MalformedQuery: not a DNS query with exactly one question.
        """
        try:
            q = parse_query(data)
        except DnsWireError as exc:
            raise MalformedQuery(f"undecodable query: {exc}") from None
        if q.is_response:
            raise MalformedQuery("a response, not a query")
        name = q.name
        app = self.app_for_name(name) if name else None
        device, group = self.group_for(client, mac, now)
        if self.allowed(group, app):
            return Forward(
                data=data,
                qid=q.id,
                name=name,
                app=app,
                client=client,
                client_port=client_port,
                transport=transport,
                device=device,
                group=group.name if group else None,
                qend=q.end,
            )
        reply = self._blocked_reply(data, q)
        rec = FlowRecord(
            time=now,
            device=device,
            group=group.name if group else None,
            transport=transport,
            client=client,
            client_port=client_port,
            server="gateway",
            server_port=53,
            app=app,
            label=self._label(app),
            evidence=(f"dns: query {name} ({qtype_name(q.qtype)})",),
            verdict="block",
            path="dns",
            name=name,
            reason=self._reason(group, app),
        )
        return Reply(reply, rec)

    def _reason(self, group: Group | None, app: str | None) -> str:
        if group is None:
            return "unrestricted"
        if group.mode == ALLOW_ONLY:
            return f"group {group.name} allows only {', '.join(group.effective_apps)}"
        return f"group {group.name} blocks {', '.join(group.effective_apps)}"

    def _blocked_reply(self, data: bytes, q: Question) -> bytes:
        how = self.policy.settings.blocked_answer
        if how == "nxdomain":
            return error_reply(data, q, NXDOMAIN)
        if how == "refused":
            return error_reply(data, q, REFUSED)
        return address_reply(data, q, how)

    def servfail(self, fwd: Forward) -> bytes:
        """Reply for a query no upstream answered."""
        try:
            return error_reply(fwd.data, parse_query(fwd.data), SERVFAIL)
        except DnsWireError:
            raise MalformedQuery("undecodable query") from None

    def ttl(self, ttl: int) -> int:
        """A set timeout for a TTL: at least ``min-set-timeout``, at most
        ``max-set-timeout`` (nftables refuses timeouts of 2^31 s and more)."""
        st = self.policy.settings
        return min(max(ttl, st.min_set_timeout), st.max_set_timeout)

    def on_answer(self, fwd: Forward, data: bytes, now: float) -> Answer:
        """Process an upstream answer to a forwarded query. Only the question's own
        answer chain counts (its name, the CNAMEs from it, their A/AAAA records): a
        record for any other owner name is ignored.

        Raises:
            MalformedQuery: the upstream answer is not DNS or not for this query.
        """
        try:
            qid, flags, qname, records = answer_chain(data, fwd.data, fwd.qend, fwd.name)
        except DnsWireError as exc:
            raise MalformedQuery(f"undecodable upstream answer: {exc}") from None
        if qid != fwd.qid or not flags & 0x8000 or qname != fwd.name:
            raise MalformedQuery("upstream answer does not match the query")
        group = self.policy.groups.get(fwd.group) if fwd.group else None
        allowed = self._allowed.get(group.name, frozenset()) if group is not None else frozenset()
        has_cname = any(r.rtype == QTYPE_CNAME for r in records)
        ok = self._follow(fwd.name, records, allowed) if has_cname else {fwd.name: True}
        chain = [r for r in records if r.rtype != QTYPE_CNAME and r.owner in ok]
        addresses = list(dict.fromkeys(r.value for r in chain))
        ttl = max((r.ttl for r in chain), default=0)
        elements: list[tuple[str, str, int]] = []
        attested: list[Attested] = []
        if group is not None and group.mode == ALLOW_ONLY and fwd.app in allowed:
            assert fwd.app is not None
            base = self._dns_sets.get((group.name, fwd.app)) or dns_set(group.name, fwd.app)
            st = self.policy.settings
            lo, hi = st.min_set_timeout, st.max_set_timeout
            for r in chain:
                t = lo if r.ttl < lo else hi if r.ttl > hi else r.ttl
                if ok[r.owner]:
                    attested.append(Attested(group.name, fwd.app, r.value, "dns", t))
                    elements.append((base, r.value, t))
                else:
                    attested.append(Attested(group.name, fwd.app, r.value, "cdn", t))
        learned = (Learned(fwd.name, tuple(addresses), ttl),) if addresses else ()
        via = ""
        if has_cname:
            cnames = [r.value for r in records if r.rtype == QTYPE_CNAME and r.owner in ok]
            via = f" via {', '.join(cnames)}"
        got = ", ".join(addresses) or rcode_name(rcode_of(data))
        rec = self._answer_record(fwd, data, now, f"dns: {fwd.name}{via} -> {got}", bool(elements))
        return Answer(
            data=data,
            elements=tuple(elements),
            learned=learned,
            record=rec,
            attested=tuple(attested),
        )

    def _follow(self, name: str, records: list[Record], allowed: frozenset[str]) -> dict[str, bool]:
        """The question's own CNAME chain: ``ok[name]`` is whether every name from the
        question to it belongs to an allowed app (at most :data:`MAX_CHAIN` hops)."""
        ok: dict[str, bool] = {name: True}
        for _ in range(MAX_CHAIN):
            grew = False
            for r in records:
                if r.rtype == QTYPE_CNAME and r.owner in ok and r.value not in ok:
                    ok[r.value] = ok[r.owner] and self.app_for_name(r.value) in allowed
                    grew = True
            if not grew:
                break
        return ok

    def _answer_record(
        self, fwd: Forward, data: bytes, now: float, evidence: str, admitted: bool
    ) -> FlowRecord:
        return FlowRecord(
            time=now,
            device=fwd.device,
            group=fwd.group,
            transport=fwd.transport,
            client=fwd.client,
            client_port=fwd.client_port,
            server="gateway",
            server_port=53,
            app=fwd.app,
            label=self._label(fwd.app),
            evidence=(evidence,),
            verdict="allow",
            path="dns",
            bytes_up=len(fwd.data),
            bytes_down=len(data),
            name=fwd.name,
            admitted_by="dns" if admitted else None,
        )
