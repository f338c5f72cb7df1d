"""
The migration report: which legacy clients still speak v1 through the
gateway, how recently, and which of them fail and why.

This is what tells an operator that a migration is done.  Every v1 request
is recorded as a `ClientVisit` against its client — identified by source
address and User-Agent, with the account thumbprints and names it used —
in one store upsert made off the reactor thread (`ClientRecorder`).  The
report classifies each client (`classify`) and is printed by ``acme-gateway
report``, served as JSON at the admin listener's ``/status.json``, and as a
page at ``/status`` (`gateway.operations.statuspage`).

One machine often shows up under several User-Agents: certbot's carries
its subcommand and flags (``(certonly; flags: n)``, ``(renew; flags: frn
n)``).  The report therefore groups the stored rows (`group_clients`): one
client per source address, product and version (the User-Agent's first
token, ``CertbotACMEClient/1.32.0``) and account — rows that share an
account key thumbprint — with each full User-Agent shown as a variant
inside.

A client that has not called for ``--migrated-after`` counts as migrated
away.  The default is long (90 days) on purpose: certbot and most v1
clients only contact the CA when a certificate is due for renewal, about
every 60 days, so a shorter period would declare a still-legacy client gone.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.operations.inventory import HeldCertificate
from gateway.operations.scope import RequestScope
from gateway.store import IStore
from gateway.store.records import (
    MAX_ADDRESS,
    MAX_NAME,
    MAX_CLIENTS,
    MAX_REASON,
    MAX_USER_AGENT,
    ClientVisit,
    LegacyClient,
    format_timestamp,
    makes_no_row,
    printable,
    timestamp_instant,
)

log = Logger()

#: Seconds of silence after which a client counts as migrated away.
DEFAULT_MIGRATED_AFTER = 90 * 86400.0

ACTIVE, FAILING, MIGRATED = "active", "failing", "migrated"
#: The order clients are listed in: what needs attention first.
STATE_ORDER = (FAILING, ACTIVE, MIGRATED)
STATE_LABELS = {ACTIVE: "active", FAILING: "failing", MIGRATED: "migrated away"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: Any) -> float:
    """
    Seconds in a duration spelled ``90d``, ``36h``, ``15m``, ``30s``, ``2w``
    or a plain number of seconds.

    :raises ValueError: for anything else, or a duration that is not positive.
    """
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"expected a duration such as 90d, 36h or 600, got {text!r}")
    seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """
    A duration the way a person says it: ``90d``, ``36h``, ``15m``, ``30s``.
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def ago(seconds: float) -> str:
    """
    How long ago, roughly: ``just now``, ``5 minutes ago``, ``3 days ago``.
    """
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"  # pragma: no cover


# --- What a v1 request tells about its client -------------------------------------


def requested_names(endpoint: str, payload: Any) -> Tuple[str, ...]:
    """
    The DNS names a verified v1 request asked for, as sent: the identifier
    of a new-authz (also one the gateway refuses, so the report shows what
    a failing client asked for); nothing for anything else (the face takes
    a new-cert's names from its parsed CSR).
    """
    if not isinstance(payload, dict):
        return ()
    if endpoint == "new-authz":
        identifier = payload.get("identifier")
        value = identifier.get("value") if isinstance(identifier, dict) else None
        return (value.lower(),) if isinstance(value, str) and value else ()
    return ()


def problem_text(content_type: Optional[str], body: bytes) -> Optional[str]:
    """
    A v1 problem document's type and detail in one line (``urn:acme:error:
    unauthorized: The account key …``), or `None` for a body that is not one.
    """
    if content_type != "application/problem+json" or not body:
        return None
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    if not isinstance(problem, dict):
        return None
    kind, detail = problem.get("type"), problem.get("detail")
    parts = [part for part in (kind, detail) if isinstance(part, str) and part]
    return ": ".join(parts) or None


def failure_reason(endpoint: str, status: int, content_type: Optional[str], body: bytes) -> str:
    """
    Why a v1 request failed, in one line: the endpoint, the status, and the
    problem document's type and detail when there is one.
    """
    reason = f"{endpoint} {status}"
    problem = problem_text(content_type, body)
    return f"{reason} {problem}" if problem else reason


#: What a visit shows for a request without a User-Agent, or an address.
NO_USER_AGENT = "(no User-Agent)"
NO_ADDRESS = "(unknown)"


class SecondText:
    """
    `format_timestamp` of the last whole second asked for, kept: the
    visits of one second share their time stamp text, and
    ``datetime.fromtimestamp`` and ``strftime`` were 2.1 µs of every
    recorded visit (py-spy, K = 32: ``format_timestamp`` 1.3 % of the
    samples).  The text depends on the whole second alone.
    """

    def __init__(self) -> None:
        self._last: Tuple[Optional[int], str] = (None, "")

    def __call__(self, at: float) -> str:
        second = int(at)
        kept, text = self._last
        if second != kept:
            text = format_timestamp(second)
            self._last = (second, text)
        return text


#: The time stamps of `visit_for`'s visits.
visit_time = SecondText()


def visit_for(
    scope: RequestScope,
    user_agent: str,
    address: str,
    at: float,
    status: int,
    content_type: Optional[str] = None,
    body: bytes = b"",
    method: str = "GET",
) -> ClientVisit:
    """
    The `ClientVisit` of a v1 request that was answered with ``status``.

    A HEAD is a nonce fetch whatever its status: certbot 1.x sends HEAD to
    POST-only resources (new-authz, new-reg) and takes the ``Replay-Nonce``
    of the 405, as it did from Boulder, so it never counts as a failure.
    """
    failed = status >= 400 and method != "HEAD"
    return ClientVisit(
        user_agent=user_agent or NO_USER_AGENT,
        address=address or NO_ADDRESS,
        at=visit_time(at),
        thumbprint=scope.thumbprint,
        names=scope.names,
        certificate=scope.endpoint == "new-cert" and status == 201,
        failure=failure_reason(scope.endpoint, status, content_type, body) if failed else None,
    )


@attrs.define
class ClientRecorder:
    """
    Records each v1 request in the migration report, without making the
    client wait and without a transaction per request: visits are batched
    and written together every ``flush_interval`` seconds (one SQLite
    transaction, on the store's thread).  A failure to record is logged,
    never answered.  Without a ``clock`` every visit is written at once.

    Only a request with a verified JWS makes a client's row; an unsigned
    one counts toward a client already recorded (the store's rule,
    `gateway.store.records.makes_no_row`).  Unsigned requests from
    anyone else — a flood of ``HEAD /directory`` with a fresh User-Agent
    each — are dropped here, in memory, before they cost the store's thread
    a lookup: only those of clients that signed since the gateway started
    go on (at most `gateway.store.records.MAX_CLIENTS` of them are kept in
    mind).  They show in the ``acme_gateway_v1_requests_total`` metric and
    the log.
    """

    store: IStore
    clock: Optional[IReactorTime] = None
    flush_interval: float = 1.0
    _pending: List[ClientVisit] = attrs.field(factory=list, init=False)
    _scheduled: Optional[IDelayedCall] = attrs.field(default=None, init=False)
    _signed: Set[Tuple[str, str]] = attrs.field(factory=set, init=False)

    def drops(self, thumbprint: Optional[str], address: str, user_agent: str) -> bool:
        """
        Whether `record` would drop the visit of a request with this
        signer (`None`: unsigned), address and User-Agent at once: the face
        need not build it (py-spy, ``HEAD /directory`` at 64 connections:
        building each visit, its time stamp text included, was 6.8 % of
        the samples, and every one was dropped).
        """
        client = (address or NO_ADDRESS, user_agent or NO_USER_AGENT)
        return thumbprint is None and client not in self._signed

    def record(self, visit: ClientVisit) -> defer.Deferred:
        client = (visit.address, visit.user_agent)
        if not makes_no_row(visit):
            if len(self._signed) < MAX_CLIENTS:
                self._signed.add(client)
        elif client not in self._signed:
            return defer.succeed(None)
        if self.clock is None:
            return self._write([visit])
        self._pending.append(visit)
        if self._scheduled is None or not self._scheduled.active():
            self._scheduled = self.clock.callLater(self.flush_interval, self.flush)
        return defer.succeed(None)

    def flush(self) -> defer.Deferred:
        """
        Write every visit waiting (at the interval, before the report is
        read, and at shutdown).
        """
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        visits, self._pending = self._pending, []
        if not visits:
            return defer.succeed(None)
        return self._write(visits)

    def _write(self, visits: list) -> defer.Deferred:
        recorded = self.store.record_clients(visits)
        recorded.addErrback(
            lambda failure: log.failure(
                "could not record {count} visit(s) in the migration report", failure,
                count=len(visits),
            )
        )
        return recorded


# --- One client, several User-Agents ----------------------------------------------


def product_of(user_agent: str) -> str:
    """
    The product and version a User-Agent starts with (RFC 9110 §10.1.5:
    ``CertbotACMEClient/1.32.0`` of ``CertbotACMEClient/1.32.0 (certbot;
    …) … (renew; flags: frn n) Py/3.11.2``), or the whole value when it
    does not start with a product token.
    """
    first = user_agent.strip().split(" ", 1)[0]
    return first if re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(/[!#$%&'*+.^_`|~0-9A-Za-z-]+)?",
                                 first) else user_agent


def _latest(*timestamps: Optional[str]) -> Optional[str]:
    present = [t for t in timestamps if t is not None]
    return max(present, key=timestamp_instant) if present else None


def merge_rows(rows: Sequence[LegacyClient]) -> LegacyClient:
    """
    The rows of one client as one: its product and version as the
    User-Agent, every thumbprint and name, the earliest first and latest
    last seen, the sums of its counts, and its latest failure.
    """
    ordered = sorted(rows, key=lambda r: timestamp_instant(r.last_seen))
    latest_failure = max((r for r in rows if r.last_failure is not None),
                         key=lambda r: timestamp_instant(r.last_failure or ""), default=None)
    thumbprints: List[str] = []
    for row in ordered:  # most recently used last
        for thumbprint in row.thumbprints:
            if thumbprint in thumbprints:
                thumbprints.remove(thumbprint)
            thumbprints.append(thumbprint)
    return LegacyClient(
        user_agent=product_of(ordered[0].user_agent),
        address=ordered[0].address,
        thumbprints=tuple(thumbprints),
        names=tuple(sorted({name for row in rows for name in row.names})),
        first_seen=min((r.first_seen for r in rows), key=timestamp_instant),
        last_seen=ordered[-1].last_seen,
        successes=sum(r.successes for r in rows),
        failures=sum(r.failures for r in rows),
        certificates=sum(r.certificates for r in rows),
        last_success=_latest(*(r.last_success for r in rows)),
        last_failure=latest_failure.last_failure if latest_failure else None,
        last_failure_reason=latest_failure.last_failure_reason if latest_failure else None,
    )


def group_clients(rows: Iterable[LegacyClient]) -> List[Tuple[LegacyClient, ...]]:
    """
    The stored rows (one per address and full User-Agent) grouped by
    client: the same address and product/version, and a shared account key
    thumbprint (transitively: a key change links both keys).  Rows that
    never signed join their product's only account group on that address,
    or make one group of their own when there are several or none.
    """
    by_product: Dict[Tuple[str, str], List[LegacyClient]] = {}
    for row in rows:
        by_product.setdefault((row.address, product_of(row.user_agent)), []).append(row)
    groups: List[Tuple[LegacyClient, ...]] = []
    for members in by_product.values():
        signed = [row for row in members if row.thumbprints]
        unsigned = [row for row in members if not row.thumbprints]
        accounts: List[Tuple[set, List[LegacyClient]]] = []
        for row in signed:
            keys = set(row.thumbprints)
            touching = [group for group in accounts if group[0] & keys]
            merged_keys, merged_rows = set(keys), [row]
            for group in touching:
                accounts.remove(group)
                merged_keys |= group[0]
                merged_rows = group[1] + merged_rows
            accounts.append((merged_keys, merged_rows))
        if unsigned and len(accounts) == 1:
            accounts[0][1].extend(unsigned)
        elif unsigned:
            accounts.append((set(), unsigned))
        groups.extend(tuple(group_rows) for _, group_rows in accounts)
    return groups


# --- The report --------------------------------------------------------------------


def classify(client: LegacyClient, now: float, migrated_after: float) -> str:
    """
    ``migrated`` when the client has been silent for longer than
    ``migrated_after`` seconds, else ``failing`` when its latest outcome was
    a failure, else ``active``.
    """
    silent = now - timestamp_instant(client.last_seen).timestamp()
    if silent > migrated_after:
        return MIGRATED
    if client.last_failure is not None and (
        client.last_success is None
        or timestamp_instant(client.last_failure) >= timestamp_instant(client.last_success)
    ):
        return FAILING
    return ACTIVE


@attrs.frozen
class ClientStatus:
    """
    One client as the report shows it.

    :ivar client: its rows merged (`merge_rows`); ``user_agent`` is its
        product and version.
    :ivar variants: its rows, one per full User-Agent, most recent first.
    """

    client: LegacyClient
    state: str
    silent_seconds: float
    variants: Tuple[LegacyClient, ...] = ()


@attrs.frozen
class OrphanedCertificate:
    """
    A certificate the CA issued that no client received, and none will: the
    answer to the request that asked for it was lost, and the client
    retried with a new key (`gateway.store.records.Certificate.orphaned`).
    The operator may want to revoke it; it is listed so that nothing the CA
    issued goes unaccounted for.
    """

    id: str
    serial: str
    names: Tuple[str, ...]
    thumbprint: str
    issued_at: str
    directory_url: Optional[str]

    @classmethod
    def of(cls, certificate: Any, thumbprint: str) -> "OrphanedCertificate":
        from cryptography import x509

        try:
            leaf = x509.load_der_x509_certificate(certificate.leaf_der)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName))
        except (ValueError, x509.ExtensionNotFound):
            # Unreadable, or without SANs: the report shows no names for it.
            names = ()
        return cls(id=certificate.id, serial=certificate.serial,
                   names=tuple(printable(name, MAX_NAME) for name in names),
                   thumbprint=thumbprint, issued_at=certificate.issued_at,
                   directory_url=certificate.directory_url)

    def as_json(self) -> dict:
        return {"id": self.id, "serial": self.serial, "names": list(self.names),
                "thumbprint": self.thumbprint, "issued_at": self.issued_at,
                "ca": self.directory_url}


@attrs.frozen
class MigrationReport:
    """
    Every legacy client with its state, at one moment.

    :ivar now: POSIX time the report was made at.
    :ivar migrated_after: the silence, in seconds, that counts as migrated.
    :ivar orphans: certificates issued that no client received
        (`OrphanedCertificate`), newest first.
    :ivar certificates: the renewal inventory (`gateway.operations.
        inventory`): every certificate a client holds, with its suggested
        renewal window.
    """

    now: float
    migrated_after: float
    clients: Tuple[ClientStatus, ...]
    orphans: Tuple[OrphanedCertificate, ...] = ()
    certificates: Tuple[HeldCertificate, ...] = ()

    def opened_early(self, client: LegacyClient) -> Tuple[HeldCertificate, ...]:
        """
        The certificates of ``client`` (by its account keys) whose renewal
        window opened early: that machine should renew now.
        """
        keys = set(client.thumbprints)
        return tuple(c for c in self.certificates if c.opened_early and c.thumbprint in keys)

    def count(self, state: str) -> int:
        return sum(1 for c in self.clients if c.state == state)

    def counts(self) -> dict:
        return {state: self.count(state) for state in STATE_ORDER}

    @property
    def still_legacy(self) -> int:
        """
        Clients that still speak v1: active or failing.
        """
        return self.count(ACTIVE) + self.count(FAILING)

    @property
    def done(self) -> bool:
        """
        Whether the migration looks finished: clients were seen, and every
        one has been silent for longer than ``migrated_after``.
        """
        return bool(self.clients) and self.still_legacy == 0

    def summary(self) -> str:
        """
        The report in one sentence.
        """
        if not self.clients:
            return "No legacy client has called the gateway yet."
        counts = self.counts()
        text = (
            f"{len(self.clients)} legacy client{'s' if len(self.clients) != 1 else ''}: "
            f"{counts[ACTIVE]} active, {counts[FAILING]} failing, "
            f"{counts[MIGRATED]} migrated away."
        )
        if self.done:
            text += (
                f" The migration looks done: no client has called for "
                f"{format_duration(self.migrated_after)}."
            )
        return text

    def as_json(self) -> dict:
        """
        The report as a JSON object (``acme-gateway report --json``,
        ``/status.json``).
        """
        return {
            "generated_at": format_timestamp(self.now),
            "migrated_after_seconds": self.migrated_after,
            "counts": self.counts(),
            "done": self.done,
            "clients": [
                {
                    "state": status.state,
                    "user_agent": status.client.user_agent,
                    "address": status.client.address,
                    "thumbprints": list(status.client.thumbprints),
                    "names": list(status.client.names),
                    "first_seen": status.client.first_seen,
                    "last_seen": status.client.last_seen,
                    "silent_seconds": int(status.silent_seconds),
                    "successes": status.client.successes,
                    "failures": status.client.failures,
                    "certificates": status.client.certificates,
                    "last_success": status.client.last_success,
                    "last_failure": status.client.last_failure,
                    "last_failure_reason": status.client.last_failure_reason,
                    "renewal_window_opened_early": [
                        held.id for held in self.opened_early(status.client)],
                    "variants": [
                        {
                            "user_agent": variant.user_agent,
                            "first_seen": variant.first_seen,
                            "last_seen": variant.last_seen,
                            "successes": variant.successes,
                            "failures": variant.failures,
                            "certificates": variant.certificates,
                            "last_failure": variant.last_failure,
                            "last_failure_reason": variant.last_failure_reason,
                        }
                        for variant in status.variants
                    ],
                }
                for status in self.clients
            ],
            "orphaned_certificates": [orphan.as_json() for orphan in self.orphans],
            "certificates": [held.as_json() for held in self.certificates],
        }

    def as_text(self) -> str:
        """
        The report for a terminal: a summary line, then each client, those
        that need attention first.
        """
        lines = [
            f"acme-gateway migration report, {format_timestamp(self.now)} "
            f"(a client silent for more than {format_duration(self.migrated_after)} "
            f"counts as migrated away)",
            self.summary(),
        ]
        for status in self.clients:
            client = status.client
            lines += [
                "",
                f"{STATE_LABELS[status.state].upper()}  {client.address}  {client.user_agent}",
                f"  last seen {client.last_seen} ({ago(status.silent_seconds)}), "
                f"first seen {client.first_seen}",
                f"  requests: {client.successes} succeeded, {client.failures} failed; "
                f"certificates issued: {client.certificates}",
            ]
            if client.thumbprints:
                lines.append(f"  account key thumbprints: {', '.join(client.thumbprints)}")
            if client.names:
                lines.append(f"  names: {', '.join(client.names)}")
            if client.last_failure is not None:
                lines.append(f"  last failure {client.last_failure}: {client.last_failure_reason}")
            for held in self.opened_early(client):
                lines.append(f"  RENEW NOW: the CA's renewal window of {', '.join(held.names)} "
                             f"opened early ({held.window_start})")
            lines.append(f"  User-Agent variants: {len(status.variants)}")
            for variant in status.variants:
                lines.append(f"    {variant.user_agent}")
                lines.append(f"      last seen {variant.last_seen}; {variant.successes} succeeded, "
                             f"{variant.failures} failed, {variant.certificates} certificate(s)")
        if self.certificates:
            early = sum(1 for held in self.certificates if held.opened_early)
            lines += ["", f"{len(self.certificates)} certificate"
                          f"{'s' if len(self.certificates) != 1 else ''} in the renewal inventory"
                          f"{f', {early} whose renewal window opened early' if early else ''}:"]
            for held in self.certificates:
                lines += held.text_lines()
        if self.orphans:
            lines += [
                "",
                f"{len(self.orphans)} certificate{'s' if len(self.orphans) != 1 else ''} issued "
                f"that no client received (the answer was lost and the client retried with a "
                f"new key; never handed out):",
            ]
            for orphan in self.orphans:
                lines.append(
                    f"  serial {orphan.serial}  {', '.join(orphan.names)}  issued "
                    f"{orphan.issued_at}  account key {orphan.thumbprint}  "
                    f"CA {orphan.directory_url or '(unknown)'}")
        return "\n".join(lines) + "\n"


def shown(row: LegacyClient) -> LegacyClient:
    """
    A stored row with every string a client chose made `printable`: a
    state written by an older gateway may hold what it recorded unchecked
    (a lone surrogate, a terminal escape, a name of 45 kB), and the page,
    the terminal and the JSON must show it all the same.
    """
    return attrs.evolve(
        row,
        user_agent=printable(row.user_agent, MAX_USER_AGENT),
        address=printable(row.address, MAX_ADDRESS),
        thumbprints=tuple(printable(t, MAX_NAME) for t in row.thumbprints),
        names=tuple(printable(n, MAX_NAME) for n in row.names),
        last_failure_reason=(None if row.last_failure_reason is None
                             else printable(row.last_failure_reason, MAX_REASON)),
    )


def build_report(
    clients: Iterable[LegacyClient], now: float, migrated_after: float = DEFAULT_MIGRATED_AFTER,
    orphans: Iterable[OrphanedCertificate] = (), certificates: Iterable[HeldCertificate] = (),
) -> MigrationReport:
    """
    Group the stored rows into clients (`group_clients`), classify each at
    ``now`` and order them: failing, active, then migrated away; most
    recently seen first within each.  What clients chose is `shown`
    printable.
    """
    statuses = []
    for rows in group_clients([shown(row) for row in clients]):
        client = merge_rows(rows)
        statuses.append(ClientStatus(
            client=client,
            state=classify(client, now, migrated_after),
            silent_seconds=max(0.0, now - timestamp_instant(client.last_seen).timestamp()),
            variants=tuple(sorted(rows, key=lambda r: timestamp_instant(r.last_seen), reverse=True)),
        ))
    statuses.sort(key=lambda s: (STATE_ORDER.index(s.state), s.silent_seconds))
    return MigrationReport(now=now, migrated_after=migrated_after, clients=tuple(statuses),
                           orphans=tuple(orphans), certificates=tuple(certificates))


def state_counts(clients: Sequence[LegacyClient], now: float, migrated_after: float) -> Mapping[str, int]:
    """
    How many clients are in each state, for the ``legacy_clients`` gauge.
    """
    return build_report(clients, now, migrated_after).counts()
