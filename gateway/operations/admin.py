"""
The admin listener (``--admin-listen``): what an orchestrator and an
operator ask a running gateway, on a port of its own so that it is never
exposed where legacy clients reach the v1 face.

- ``/healthz``: the process serves (liveness) — nothing else is checked, so
  that a slow CA never gets the gateway restarted;
- ``/readyz``: the gateway can serve — its v1 listener is listening, the
  store commits a write, and it has account keys (or serves unknown keys in
  managed mode); a failure names the check and the reason.  It never asks
  the CA: as a sidecar's readiness probe, a CA outage must not take the
  legacy application's pod out of its Service.  ``/readyz?upstream=1``
  also asks whether the upstream directory answered recently;
- ``/metrics``: Prometheus exposition (`gateway.operations.metrics`), with the
  upstream's reachability refreshed at each scrape
  (``acme_gateway_ready{check="upstream"}``), for alerts;
- ``/status``: the migration report as a page (`gateway.operations.statuspage`), and
  ``/status.json`` as data.

With ``--admin-token-file`` every page but ``/healthz`` asks for that
token as ``Authorization: Bearer …`` (401 otherwise): the pages show names,
client addresses and thumbprints.

Every page is computed from ``async def`` code; the store is only read
through its own thread.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Coroutine, List, Optional, Protocol, Tuple

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import pages, resource, server

from gateway.keys.keystore import KeyStore
from gateway.operations import statuspage
from gateway.operations.inventory import inventory
from gateway.operations.metrics import Metrics
from gateway.operations.report import (
    DEFAULT_MIGRATED_AFTER,
    ClientRecorder,
    OrphanedCertificate,
    build_report,
)
from gateway.status import Status
from gateway.store import IStore
from gateway.store.records import format_timestamp
from gateway.web import NO_BODY, AsyncResource, ListenerLimits, ListenerSite, Response

log = Logger()

#: How long a readiness check may take before it counts as failed: probes
#: time out after a few seconds, and a hanging check must say so itself.
CHECK_TIMEOUT = 4.0
#: How old the last good answer of the upstream directory may be before
#: ``/readyz`` asks the CA again.
DEFAULT_READY_MAX_AGE = 30.0

_HTML_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'"


class CheckTimedOut(Exception):
    """
    A readiness check that did not finish within its time.
    """


async def _within(clock: Any, seconds: float, start: Callable[[], defer.Deferred]) -> Any:
    """
    Await ``start()``, abandoning it (cancelled) after ``seconds``.

    The deadline holds whatever the work does with its cancellation: the
    answer is given at the deadline, not when the cancelled work finally
    ends (an upstream read once took its cancellation for an outage and
    retried it for a minute).

    :raises CheckTimedOut: when it did not finish in time.
    """
    waiting = start()
    outcome: defer.Deferred = defer.Deferred()

    def give_up() -> None:
        if not outcome.called:
            outcome.errback(CheckTimedOut(f"no answer within {seconds:g}s"))
        waiting.cancel()

    def settle(result: Any) -> None:
        if not outcome.called:
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)
        elif isinstance(result, Failure):
            log.debug("abandoned check ended: {failure}", failure=result.getErrorMessage())

    timer = clock.callLater(seconds, give_up)
    waiting.addBoth(settle)
    try:
        return await outcome
    finally:
        if timer.active():
            timer.cancel()


class UpstreamDirectory(Protocol):
    """
    What readiness asks of the upstream client: its directory, afresh.
    """

    directory_url: str

    def directory(self, refresh: bool = ...) -> Coroutine[Any, Any, object]: ...


class BudgetLeft(Protocol):
    """
    What is left of one account's budget.
    """

    @property
    def orders_left(self) -> int: ...

    @property
    def pending_left(self) -> int: ...


class AccountBudgets(Protocol):
    """
    The rate-limit accounting (`gateway.translate.budget.Budget` is it).
    """

    def state(self, account_id: int) -> Awaitable[BudgetLeft]: ...


@attrs.frozen
class CheckResult:
    """
    The outcome of one readiness check, with a reason a person can act on.
    """

    name: str
    ok: bool
    detail: str


@attrs.define
class Readiness:
    """
    Whether the gateway can serve v1 clients right now (`check`), and
    whether its upstream answers (`check_upstream`).

    :ivar max_age: seconds a good upstream answer stays good; after that a
        probe fetches the directory again (so a CA that went away turns the
        gateway unready within ``max_age`` plus one probe period).
    :ivar listeners: ``(name, port)`` of each listener that must be
        listening (the v1 face); a port stops listening at shutdown.
    :ivar keys: the `gateway.keys.keystore.KeyStore`, or `None` not to check it.
    :ivar managed: whether unknown keys are served in managed mode (then an
        empty key store is fine).
    """

    upstream: UpstreamDirectory
    store: IStore
    clock: IReactorTime
    metrics: Optional[Metrics] = None
    max_age: float = DEFAULT_READY_MAX_AGE
    timeout: float = CHECK_TIMEOUT
    listeners: Tuple[Tuple[str, IListeningPort], ...] = ()
    keys: Optional[KeyStore] = None
    managed: bool = False
    _upstream_ok_at: Optional[float] = attrs.field(default=None, init=False)

    def upstream_answered(self) -> None:
        """
        Note that the upstream directory answered just now.
        """
        self._upstream_ok_at = self.clock.seconds()

    async def check_upstream(self) -> CheckResult:
        now = self.clock.seconds()
        if self._upstream_ok_at is not None and now - self._upstream_ok_at < self.max_age:
            return CheckResult("upstream", True, f"directory answered {now - self._upstream_ok_at:.0f}s ago")
        url = self.upstream.directory_url
        try:
            await _within(
                self.clock, self.timeout,
                lambda: defer.ensureDeferred(self.upstream.directory(refresh=True)),
            )
        except Exception as error:
            return CheckResult("upstream", False, f"directory {url} did not answer: {error}")
        self.upstream_answered()
        return CheckResult("upstream", True, f"directory {url} answered")

    async def check_store(self) -> CheckResult:
        try:
            await _within(self.clock, self.timeout, self.store.check_writable)
        except Exception as error:
            return CheckResult("store", False, f"cannot commit a write: {error}")
        return CheckResult("store", True, "writable")

    async def check_listening(self) -> CheckResult:
        down = [name for name, port in self.listeners if not getattr(port, "connected", False)]
        if down:
            return CheckResult("listening", False, f"not listening: {', '.join(down)} (stopping?)")
        where = ", ".join(f"{name} on {_address(port)}" for name, port in self.listeners)
        return CheckResult("listening", True, where or "nothing to check")

    async def check_keys(self) -> CheckResult:
        if self.keys is None:
            return CheckResult("keys", True, "not checked")
        count = len(self.keys)
        if count:
            return CheckResult("keys", True, f"{count} account key(s) loaded")
        if self.managed:
            return CheckResult("keys", True, "no account key loaded; managed mode serves unknown keys")
        return CheckResult("keys", False, f"no usable account key in {self.keys.directory}: every "
                                          f"client would be refused")

    async def check(self, upstream: bool = False) -> List[CheckResult]:
        """
        Run the checks of being able to serve — listening, store, keys —
        and, with ``upstream``, the upstream's, concurrently.
        """
        checks = []
        if self.listeners:
            checks.append(self.check_listening())
        checks.append(self.check_store())
        if self.keys is not None:
            checks.append(self.check_keys())
        if upstream:
            checks.append(self.check_upstream())
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in checks])
        self._note(results)
        return list(results)

    async def upstream_gauge(self) -> CheckResult:
        """
        Check the upstream (at most every ``max_age``) and set its gauge:
        what a metrics scrape does, so alerts see a CA that went away.
        """
        result = await self.check_upstream()
        self._note([result])
        return result

    def _note(self, results) -> None:
        if self.metrics is not None:
            for result in results:
                self.metrics.set_ready(result.name, result.ok)


def _address(port: Any) -> str:
    try:
        host = port.getHost()
    except (AttributeError, OSError):
        return "?"
    return f"{getattr(host, 'host', host)}:{getattr(host, 'port', '')}"


#: Headers every admin page carries: never cached, never sniffed.
_PAGE_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


class Page(AsyncResource):
    """
    An admin page: GET and HEAD, answered by an ``async def``.
    """

    def __init__(self, answer: Callable[[server.Request], Awaitable[Response]]) -> None:
        super().__init__()
        self._answer_page = answer

    def render(self, request: server.Request) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            raise server.UnsupportedMethod((b"GET", b"HEAD"))
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        return super().render(request)

    async def respond(self, request: server.Request) -> Response:
        answer = await self._answer_page(request)
        return attrs.evolve(answer, headers=_PAGE_HEADERS + answer.headers)

    def failed(self, request: server.Request) -> Response:
        return Response(500, b"internal error\n", "text/plain; charset=utf-8", _PAGE_HEADERS)


class _Root(resource.Resource):
    """
    The admin pages; any other path is a plain 404.
    """

    def getChild(self, path, request):
        return pages.notFound()


def _text(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


@attrs.define
class Admin:
    """
    The admin listener's pages over one gateway's store, upstream client
    and metrics.
    """

    store: IStore
    clock: IReactorTime
    metrics: Metrics
    readiness: Readiness
    migrated_after: float = DEFAULT_MIGRATED_AFTER
    #: The gateway's rate-limit budget, for the budget gauges.
    budget: Optional[AccountBudgets] = None
    #: The batching `gateway.operations.report.ClientRecorder`, flushed before a report.
    recorder: Optional[ClientRecorder] = None
    #: The bearer token every page but ``/healthz`` asks for
    #: (``--admin-token-file``), or `None` for none.
    token: Optional[str] = attrs.field(default=None, repr=False)

    def _guarded(self, answer: Callable[[server.Request], Awaitable[Response]]
                 ) -> Callable[[server.Request], Awaitable[Response]]:
        """
        ``answer``, behind the bearer token when there is one: the pages show
        names, client addresses and thumbprints.  A request without the
        right ``Authorization: Bearer …`` gets 401 and nothing else.
        """
        token = self.token
        if token is None:
            return answer
        expected = ("Bearer " + token).encode("utf-8")

        async def guarded(request: server.Request) -> Response:
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, expected):
                return Response(401, b"this page needs the admin token "
                                     b"(Authorization: Bearer, --admin-token-file)\n",
                                "text/plain; charset=utf-8",
                                (("WWW-Authenticate", 'Bearer realm="acme-gateway admin"'),))
            return await answer(request)

        return guarded

    async def healthz(self, request) -> Response:
        return _text(200, "ok\n")

    async def readyz(self, request) -> Response:
        asked = (request.args.get(b"upstream") or [b""])[-1].lower()
        results = await self.readiness.check(upstream=asked in (b"1", b"true", b"yes"))
        ready = all(r.ok for r in results)
        lines = ["ready" if ready else "not ready"]
        lines += [f"{r.name}: {'ok' if r.ok else 'FAILED'}: {r.detail}" for r in results]
        if not ready:
            log.warn("not ready: {failed}",
                     failed="; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok))
        return _text(200 if ready else 503, "\n".join(lines) + "\n")

    async def _report(self):
        if self.recorder is not None:
            await self.recorder.flush()
        clients = await self.store.list_clients()
        orphaned = await self.store.orphaned_certificates()
        held = await self.store.current_certificates()
        thumbprints = ({a.id: a.thumbprint for a in await self.store.list_accounts()}
                       if orphaned or held else {})
        orphans = [OrphanedCertificate.of(c, thumbprints.get(c.account_id, "")) for c in orphaned]
        certificates = inventory(held, await self.store.renewal_windows(), thumbprints)
        return build_report(clients, self.clock.seconds(), self.migrated_after, orphans,
                            certificates)

    async def metrics_page(self, request) -> Response:
        await self.readiness.upstream_gauge()
        try:
            now = format_timestamp(self.clock.seconds())
            self.metrics.set_pending_authorizations(
                await self.store.count_authorizations(Status.PENDING, unexpired_at=now)
            )
            report = await self._report()
            self.metrics.set_client_states(report.counts())
            self.metrics.set_renewal_windows(report.certificates)
            if self.budget is not None:
                for account in await self.store.list_accounts():
                    if account.status == Status.VALID:
                        state = await self.budget.state(account.id)
                        self.metrics.set_rate_limit_budget(
                            account.thumbprint, min(state.orders_left, state.pending_left))
        except Exception as error:
            # Counters are still worth a scrape when the store is not.
            log.warn("metrics: store-backed gauges not refreshed: {error}", error=str(error))
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        body, content_type = self.metrics.render(accept)
        return Response(200, body, content_type)

    async def status_page(self, request) -> Response:
        page = statuspage.render(await self._report())
        return Response(200, page, "text/html; charset=utf-8",
                        (("Content-Security-Policy", _HTML_POLICY),))

    async def status_json(self, request) -> Response:
        body = json.dumps((await self._report()).as_json(), indent=2).encode("utf-8") + b"\n"
        return Response(200, body, "application/json")

    async def index(self, request) -> Response:
        page = (
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>acme-gateway admin</title></head><body><h1>acme-gateway admin</h1><ul>"
            '<li><a href="status">status</a>: the migration report</li>'
            '<li><a href="status.json">status.json</a></li>'
            '<li><a href="metrics">metrics</a></li>'
            '<li><a href="healthz">healthz</a></li><li><a href="readyz">readyz</a> '
            '(<a href="readyz?upstream=1">with the upstream</a>)</li>'
            "</ul></body></html>"
        ).encode("utf-8")
        return Response(200, page, "text/html; charset=utf-8",
                        (("Content-Security-Policy", _HTML_POLICY),))

    def resource(self) -> resource.Resource:
        """
        The admin listener's resource tree.
        """
        root = _Root()
        for path, answer in (
            (b"", self.index),
            (b"healthz", self.healthz),
            (b"readyz", self.readyz),
            (b"metrics", self.metrics_page),
            (b"status", self.status_page),
            (b"status.json", self.status_json),
        ):
            # Liveness stays open: an orchestrator's probe carries no token.
            root.putChild(path, Page(answer if path == b"healthz" else self._guarded(answer)))
        return root

    def site(self, limits: ListenerLimits = ListenerLimits(), **kwargs: Any) -> ListenerSite:
        """
        The admin listener's site, bounded by ``limits`` (it takes no
        bodies); probes every few seconds must not fill the log with
        access lines (`gateway.web.QuietSite`).
        """
        return ListenerSite(self.resource(), attrs.evolve(limits, max_body=NO_BODY), **kwargs)
