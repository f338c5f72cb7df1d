"""
The gateway's Prometheus metrics: the families, and the few rules that turn
what the v1 face and the upstream client see into them.

Each gateway owns its own `CollectorRegistry` rather than the process-wide
default, so that two gateways in one process (the test suite) never share
counters, and nothing else in the process leaks into ``/metrics``.

A family has no samples until something happens that fills it (the budget
gauge once an account has one, revalidations once the gateway validated a
name itself); it is never given made-up values.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway import __version__
from gateway.operations.inventory import HeldCertificate
from gateway.operations.scope import current_request_id
from gateway.store.records import timestamp_instant

PREFIX = "acme_gateway"

#: Upstream latency buckets: a directory GET answers in milliseconds, a
#: finalize that waits on the CA's issuance pipeline in seconds.
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The states a legacy client can be in (see `gateway.operations.report`).
CLIENT_STATES = ("active", "failing", "migrated")


class Metrics:
    """
    Every metric family of one gateway.

    The v1 face calls `v1_response`, the upstream client calls
    `upstream_response`; the admin listener refreshes the store-backed
    gauges (`set_pending_authorizations`, `set_client_states`) right before
    it renders a scrape, because the store is read off the reactor thread
    and a collector cannot wait for it.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None, process: bool = True):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        Info(f"{PREFIX}_build", "The running acme-gateway.", registry=r).info(
            {"version": __version__}
        )
        self.v1_requests = Counter(
            f"{PREFIX}_v1_requests", "v1 requests answered, by v1 endpoint and HTTP status.",
            ["endpoint", "status"], registry=r,
        )
        self.v2_requests = Counter(
            f"{PREFIX}_v2_requests",
            "Requests the v2 face (/v2/) answered, by v2 endpoint and HTTP status.",
            ["endpoint", "status"], registry=r,
        )
        # Each (endpoint, status) pair's child counter, looked up once:
        # ``labels()`` checks and joins the label values and takes a lock
        # on every call (1.3 µs of every v1 answer, for a handful of
        # pairs: the endpoints and statuses are few and fixed).
        self._v1_counters: Dict[Tuple[str, int], Any] = {}
        self._v2_counters: Dict[Tuple[str, int], Any] = {}
        self.upstream_requests = Counter(
            f"{PREFIX}_upstream_requests",
            "Requests to the upstream ACME v2 CA, by kind and HTTP status "
            "(status 'error' when no response came: refused, reset, TLS failure, timeout).",
            ["kind", "status"], registry=r,
        )
        self.upstream_seconds = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Time to a complete upstream response, by kind; exemplars carry the v1 request id.",
            ["kind"], buckets=UPSTREAM_BUCKETS, registry=r,
        )
        self.orders_created = Counter(
            f"{PREFIX}_orders_created", "Upstream orders created (newOrder answered 201).",
            registry=r,
        )
        self.pending_authorizations = Gauge(
            f"{PREFIX}_pending_authorizations",
            "Unexpired authorizations the gateway last saw pending (from its store).",
            registry=r,
        )
        self.rate_limit_budget = Gauge(
            f"{PREFIX}_rate_limit_budget_remaining",
            "New orders the gateway may still create for an account before a rate limit "
            "(the smaller of the orders left in the window and the pending authorizations "
            "left), by account thumbprint.",
            ["account"], registry=r,
        )
        self.revalidations = Counter(
            f"{PREFIX}_revalidations",
            "Names the gateway validated itself (revalidation at new-cert, and every name in "
            "managed mode), by outcome.",
            ["outcome"], registry=r,
        )
        self.certificates_issued = Counter(
            f"{PREFIX}_certificates_issued", "Certificates issued to v1 clients (new-cert 201).",
            registry=r,
        )
        self.certificates_revoked = Counter(
            f"{PREFIX}_certificates_revoked", "Certificates revoked for v1 clients (revoke-cert 200).",
            registry=r,
        )
        self.legacy_clients = Gauge(
            f"{PREFIX}_legacy_clients",
            "Legacy v1 clients in the migration report, by state "
            "(active, failing, migrated: silent for longer than --migrated-after).",
            ["state"], registry=r,
        )
        self.renewal_window_start = Gauge(
            f"{PREFIX}_renewal_window_start_timestamp_seconds",
            "Start of the CA's suggested renewal window (ARI) of each certificate of the "
            "inventory, by account thumbprint and serial.",
            ["account", "serial"], registry=r,
        )
        self.renewal_window_end = Gauge(
            f"{PREFIX}_renewal_window_end_timestamp_seconds",
            "End of the CA's suggested renewal window (ARI), by account thumbprint and serial.",
            ["account", "serial"], registry=r,
        )
        self.renewal_window_opened_early = Gauge(
            f"{PREFIX}_renewal_window_opened_early",
            "1 when the CA's suggested renewal window of a certificate opened early (revocation, "
            "an incident): its client should renew now; by account thumbprint and serial.",
            ["account", "serial"], registry=r,
        )
        self.ready = Gauge(
            f"{PREFIX}_ready",
            "Result of the last readiness check, by check (1 passed, 0 failed).",
            ["check"], registry=r,
        )

    # -- hooks -----------------------------------------------------------------

    def v1_response(self, endpoint: str, status: int) -> None:
        """
        Count one v1 answer; a 201 from new-cert is an issued certificate and
        a 200 from revoke-cert a revoked one.
        """
        _child(self._v1_counters, self.v1_requests, endpoint, status).inc()
        if endpoint == "new-cert" and status == 201:
            self.certificates_issued.inc()
        elif endpoint == "revoke-cert" and status == 200:
            self.certificates_revoked.inc()

    def v2_response(self, endpoint: str, status: int) -> None:
        """
        Count one answer of the v2 face.
        """
        _child(self._v2_counters, self.v2_requests, endpoint, status).inc()

    def upstream_response(self, kind: str, status: Optional[int], seconds: float) -> None:
        """
        Count one upstream exchange (``status`` `None` when none came back)
        and its latency, with the id of the v1 request it served as the
        exemplar; a 201 from newOrder is a created order.
        """
        request_id = current_request_id()
        self.upstream_requests.labels(kind, "error" if status is None else str(status)).inc()
        exemplar = {"request_id": request_id} if request_id else None
        self.upstream_seconds.labels(kind).observe(max(seconds, 0.0), exemplar=exemplar)
        if kind == "newOrder" and status == 201:
            self.orders_created.inc()

    def revalidation(self, outcome: str) -> None:
        """
        For gateway-side revalidation: count one, by outcome (``valid``,
        ``invalid``, ``error``…).
        """
        self.revalidations.labels(outcome).inc()

    def set_rate_limit_budget(self, thumbprint: str, remaining: float) -> None:
        """
        For gateway-side rate limiting: what an account may still spend.
        """
        self.rate_limit_budget.labels(thumbprint).set(remaining)

    def set_pending_authorizations(self, count: int) -> None:
        self.pending_authorizations.set(count)

    def set_client_states(self, counts: Mapping[str, int]) -> None:
        for state in CLIENT_STATES:
            self.legacy_clients.labels(state).set(counts.get(state, 0))

    def set_renewal_windows(self, certificates: Iterable[HeldCertificate]) -> None:
        """
        The suggested renewal windows of the inventory, replacing the last
        scrape's (a renewed certificate's series goes away).
        """
        for gauge in (self.renewal_window_start, self.renewal_window_end,
                      self.renewal_window_opened_early):
            gauge.clear()
        for held in certificates:
            if held.window_start is None or held.window_end is None:
                continue
            labels = (held.thumbprint, held.serial)
            self.renewal_window_start.labels(*labels).set(
                timestamp_instant(held.window_start).timestamp())
            self.renewal_window_end.labels(*labels).set(
                timestamp_instant(held.window_end).timestamp())
            self.renewal_window_opened_early.labels(*labels).set(1 if held.opened_early else 0)

    def set_ready(self, check: str, ok: bool) -> None:
        self.ready.labels(check).set(1 if ok else 0)

    # -- exposition ------------------------------------------------------------

    def render(self, accept: Optional[str]) -> tuple:
        """
        The scrape body and its content type, in the format the scraper
        asked for (OpenMetrics, with exemplars, when it accepts it).
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _child(children: Dict[Tuple[str, int], Any], counter: Counter, endpoint: str,
           status: int) -> Any:
    """
    ``counter``'s child for ``(endpoint, status)``, kept in ``children``
    after its first ``labels()`` call.
    """
    child = children.get((endpoint, status))
    if child is None:
        child = children[endpoint, status] = counter.labels(endpoint, str(status))
    return child
