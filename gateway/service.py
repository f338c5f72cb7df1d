"""
Wiring: from a frozen configuration to a running gateway — the key store,
the SQLite store, the upstream client, the v1 face and its listener.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, List, Optional

import attrs
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger
from twisted.web import server

from gateway.admin import DEFAULT_READY_MAX_AGE, Admin, Readiness
from gateway.budget import Budget, BudgetLimits, deactivate_abandoned
from gateway.keystore import KeyStore
from gateway.metrics import Metrics
from gateway.nonces import NonceIssuer
from gateway.report import DEFAULT_MIGRATED_AFTER, ClientRecorder
from gateway.store import open_store
from gateway.translate.context import Context, Policy
from gateway.translate.recovery import recover
from gateway.upstream.client import UpstreamClient
from gateway.upstream.startup import diagnose, keep_asking
from gateway.managed import ManagedKeys
from gateway.v1.limits import V1Site
from gateway.v1.resource import DEFAULT_MAX_BODY, V1Face
from gateway.validation.dns01 import (
    HookDNS01Responder,
    RFC2136DNS01Responder,
    TSIGKey,
    responders_by_type,
)
from gateway.validation.http01 import HTTP01Responder
from gateway.validation.revalidate import Validators

log = Logger()


@attrs.frozen
class ServeConfig:
    """
    Everything ``acme-gateway serve`` needs, checked by the command line.
    """

    upstream: str
    keys: str
    upstream_ca_bundle: Optional[str] = None
    state: str = "./acme-gateway.sqlite3"
    listen: str = "tcp:4000:interface=127.0.0.1"
    base_url: Optional[str] = None
    agree_to_terms: bool = True
    request_timeout: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    #: Load key files their group or others may read (``--allow-shared-key-files``).
    allow_shared_key_files: bool = False
    admin_listen: Optional[str] = None
    migrated_after: float = DEFAULT_MIGRATED_AFTER
    ready_max_age: float = DEFAULT_READY_MAX_AGE
    http01_listen: Optional[str] = None
    dns01_hook: Optional[str] = None
    dns01_rfc2136: Optional[tuple] = None
    dns01_rfc2136_key_name: Optional[str] = None
    dns01_rfc2136_key_secret: Optional[str] = attrs.field(default=None, repr=False)
    dns01_rfc2136_key_algorithm: str = "hmac-sha256"
    dns01_rfc2136_zone: Optional[str] = None
    dns01_propagation_seconds: float = 0.0
    challenge_preference: tuple = ("http-01", "dns-01")
    unknown_keys: str = "reject"
    managed_keys: Optional[str] = None
    budget: BudgetLimits = BudgetLimits()
    shutdown_grace: float = 10.0
    bad_nonce_retries: int = 5


@attrs.define
class RunningGateway:
    """
    A started gateway: what to stop, and what tests may inspect.
    """

    context: Context
    store: Any
    port: Any
    site: Any
    http01_port: Any = None
    admin_port: Any = None
    metrics: Any = None
    readiness: Any = None
    face: Any = None
    sweep: Any = None
    clock: Any = None
    shutdown_grace: float = 10.0
    #: Asking an upstream that was not reachable at start-up, until it answers.
    upstream_watch: Any = None

    async def stop(self) -> None:
        """
        Stop accepting, let the requests in flight finish within the grace
        period, then close everything.
        """
        if self.sweep is not None and self.sweep.running:
            self.sweep.stop()
        if self.upstream_watch is not None:
            self.upstream_watch.cancel()
        await self.port.stopListening()
        if self.face is not None and self.clock is not None:
            left = await self.face.quiesce(self.clock, self.shutdown_grace)
            if left:
                log.warn("shutdown: {count} request(s) still running after the grace period",
                         count=left)
        if self.admin_port is not None:
            await self.admin_port.stopListening()
        await self.context.drain()
        if self.face is not None and getattr(self.face, "recorder", None) is not None:
            await self.face.recorder.flush()
        if self.http01_port is not None:
            await self.http01_port.stopListening()
        await self.store.close()


#: How long start-up waits for recovery before serving anyway (recovery
#: then continues with the sweeps).
RECOVERY_AT_START_SECONDS = 15.0


async def _recover_before_serving(reactor: Any, context: Context) -> None:
    """
    Complete from the CA what a crash left unfinished (`gateway.translate.
    recovery`) before the first client is served, within
    `RECOVERY_AT_START_SECONDS`; a CA that does not answer only delays it.
    """
    attempt = defer.Deferred.fromCoroutine(recover(context))
    attempt.addTimeout(RECOVERY_AT_START_SECONDS, reactor)
    try:
        await attempt
    except Exception as error:
        log.warn("recovery at start-up did not finish ({error}); the sweeps will retry",
                 error=str(error) or type(error).__name__)


async def _sweep(context: Context, request_timeout: float) -> None:
    """
    The periodic sweep: recovery, then abandoned pending authorizations
    (which recovery may just have made visible).  A newOrder younger than
    ten request timeouts may still be in flight: recovery leaves it.
    """
    try:
        await recover(context, settled_after=10 * request_timeout)
    except Exception as error:
        log.warn("recovery failed: {error}", error=str(error))
    await deactivate_abandoned(context)


def report_key_store(keys: KeyStore, out=sys.stderr) -> None:
    """
    Say at start-up what the key store holds, which files could not be used
    (by name, with the reason) and which were skipped.
    """
    print(f"acme-gateway: {len(keys)} account key(s) loaded from {keys.directory}", file=out)
    for loaded in keys.loaded:
        print(f"  key {loaded.key.thumbprint} {loaded.key.label} {loaded.path}", file=out)
    for problem in keys.problems:
        print(f"  error: {problem.path}: {problem.reason}", file=out)
    for skipped in keys.skipped:
        print(f"  skipped: {skipped.path}: {skipped.reason}", file=out)


class StartError(Exception):
    """
    The gateway cannot start because of one setting: the flag, its value,
    and why (with the fix, where there is one).
    """

    def __init__(self, flag: str, value: Any, reason: str):
        super().__init__(flag, value, reason)
        self.flag = flag
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.flag} {self.value}: {self.reason}"


def _state_problem(path: str, error: BaseException) -> str:
    """
    Why the state database at ``path`` cannot be opened, in terms an
    operator can act on (SQLite only says "unable to open database file").
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "cannot open the state database: it is a directory; give a file path"
    # SQLite's write-ahead log puts two more files beside the database.
    if not os.access(directory, os.W_OK | os.X_OK):
        return (f"cannot open the state database: this user (uid {os.getuid()}) cannot create "
                f"files in {directory} ({error})")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return (f"cannot open the state database: this user (uid {os.getuid()}) cannot read "
                f"and write it ({error})")
    return f"cannot open the state database: {error}"


async def _listen(reactor: Any, flag: str, description: str, factory: Any) -> Any:
    try:
        return await endpoints.serverFromString(reactor, description).listen(factory)
    except Exception as error:
        raise StartError(flag, description, f"cannot listen: {error}") from error


async def start(reactor: Any, config: ServeConfig, keys: Optional[KeyStore] = None,
                on_fatal: Optional[Callable[[StartError], None]] = None) -> RunningGateway:
    """
    Open the state, build the object graph, listen, and ask the upstream
    for its directory.

    :param on_fatal: called when an upstream that could not be reached at
        start-up later answers, and is not a usable ACME v2 directory.
    :raises StartError: naming the setting that stopped it; whatever was
        opened is closed again.
    """
    if keys is None:
        keys = KeyStore.load(config.keys, allow_shared=config.allow_shared_key_files)
        report_key_store(keys)
    opened: List[Callable[[], Any]] = []

    async def close_opened() -> None:
        for close in reversed(opened):
            closing = close()
            if closing is not None:
                await closing

    try:
        running = await _start(reactor, config, keys, opened, on_fatal)
    except BaseException:
        await close_opened()
        raise
    return running


async def _start(reactor: Any, config: ServeConfig, keys: KeyStore, opened: list,
                 on_fatal: Optional[Callable[[StartError], None]]) -> RunningGateway:
    try:
        # The gateway closes the store itself, after requests in flight finish.
        # Bound to --upstream: nothing of a CA the state was used with before
        # (account URLs, orders, authorizations) is used with this one.
        store = await open_store(config.state, reactor=reactor, close_on_shutdown=False,
                                 upstream=config.upstream)
    except Exception as error:
        raise StartError("--state", config.state, _state_problem(config.state, error)) from error
    opened.append(store.close)
    metrics = Metrics()

    def upstream_client(directory_url: str) -> UpstreamClient:
        return UpstreamClient.create(
            reactor,
            directory_url,
            ca_bundle=config.upstream_ca_bundle,
            request_timeout=config.request_timeout,
            metrics=metrics,
            max_nonce_retries=config.bad_nonce_retries,
        )

    upstream = upstream_client(config.upstream)
    responders = []
    http01_port = None
    if config.http01_listen:
        http01 = HTTP01Responder()
        http01_site = server.Site(http01)
        http01_site.noisy = False
        http01_port = await _listen(reactor, "--http01-listen", config.http01_listen, http01_site)
        opened.append(http01_port.stopListening)
        responders.append(http01)
    if config.dns01_hook:
        responders.append(HookDNS01Responder(
            reactor, config.dns01_hook, propagation_seconds=config.dns01_propagation_seconds))
    if config.dns01_rfc2136:
        key = None
        if config.dns01_rfc2136_key_name:
            key = TSIGKey(config.dns01_rfc2136_key_name, config.dns01_rfc2136_key_secret,
                          config.dns01_rfc2136_key_algorithm)
        host, dns_port = config.dns01_rfc2136
        responders.append(RFC2136DNS01Responder(
            reactor, host, dns_port, key=key, zone=config.dns01_rfc2136_zone,
            propagation_seconds=config.dns01_propagation_seconds))
    validators = Validators(responders_by_type(responders), config.challenge_preference)
    managed = None
    if config.unknown_keys == "managed":
        managed_dir = config.managed_keys or config.state + ".managed-keys"
        try:
            managed = ManagedKeys.open(managed_dir)
        except (OSError, ValueError) as error:
            raise StartError("--managed-keys", managed_dir,
                             f"cannot use the managed-key directory: {error}") from error
    context = Context(
        upstream=upstream,
        store=store,
        keys=keys,
        clock=reactor,
        policy=Policy(agree_to_terms=config.agree_to_terms),
        validators=validators,
        managed_keys=managed,
        budget=Budget(store, reactor, config.budget),
        metrics=metrics,
        upstream_factory=upstream_client,
    )
    await _recover_before_serving(reactor, context)
    recorder = ClientRecorder(store, clock=reactor)
    face = V1Face(context, NonceIssuer(reactor), base_url=config.base_url, max_body=config.max_body,
                  metrics=metrics, recorder=recorder)
    # Bodies above max_body are refused as they arrive, never buffered.
    site = V1Site(face)
    site.noisy = False
    site.displayTracebacks = False
    # The v1 face logs each request itself, with named fields and its
    # request id; Twisted's classic access line would only repeat it.
    site.log = lambda request: None
    port = await _listen(reactor, "--listen", config.listen, site)
    opened.append(port.stopListening)
    readiness = Readiness(upstream, store, reactor, metrics=metrics, max_age=config.ready_max_age,
                          listeners=(("v1", port),), keys=keys, managed=managed is not None)
    admin_port = None
    if config.admin_listen:
        admin = Admin(store, reactor, metrics, readiness, migrated_after=config.migrated_after,
                      budget=context.budget, recorder=recorder)
        admin_port = await _listen(reactor, "--admin-listen", config.admin_listen, admin.site())
        opened.append(admin_port.stopListening)
        log.info("acme-gateway admin listener on {address}", address=admin_port.getHost())
    watch = None
    try:
        await upstream.directory()
        readiness.upstream_answered()
    except Exception as error:
        diagnosis = diagnose(error, config.upstream, config.upstream_ca_bundle)
        if diagnosis.wrong:
            raise StartError("--upstream", config.upstream, diagnosis.reason) from error
        log.warn("upstream directory {url} is not reachable (yet): {reason}; the gateway serves "
                 "and keeps asking (v1 clients get serverInternal until it answers)",
                 url=config.upstream, reason=diagnosis.reason)
        watch = _keep_asking(reactor, config, upstream, readiness, on_fatal)
    address = port.getHost()
    log.info("acme-gateway v1 face listening on {address}", address=address)
    sweep = None
    if config.budget.abandoned_after:
        sweep = task.LoopingCall(
            lambda: defer.Deferred.fromCoroutine(_sweep(context, config.request_timeout)).addErrback(
                lambda failure: log.failure("abandoned-authorization sweep failed", failure))
        )
        sweep.clock = reactor
        sweep.start(max(1.0, min(300.0, config.budget.abandoned_after / 4)), now=False)
    return RunningGateway(context=context, store=store, port=port, site=site, http01_port=http01_port,
                          admin_port=admin_port, metrics=metrics, readiness=readiness,
                          face=face, sweep=sweep, clock=reactor,
                          shutdown_grace=config.shutdown_grace, upstream_watch=watch)


def _keep_asking(reactor: Any, config: ServeConfig, upstream: Any, readiness: Readiness,
                 on_fatal: Optional[Callable[[StartError], None]]) -> defer.Deferred:
    """
    Ask the upstream directory until it answers (`gateway.upstream.startup`);
    an answer that shows ``--upstream`` is wrong is fatal, as at start-up.
    """

    def answered() -> None:
        readiness.upstream_answered()
        log.info("upstream directory {url} answered", url=config.upstream)

    def wrong(diagnosis) -> None:
        error = StartError("--upstream", config.upstream, diagnosis.reason)
        log.critical("{error}", error=str(error))
        if on_fatal is not None:
            on_fatal(error)

    asking = defer.Deferred.fromCoroutine(keep_asking(
        upstream, reactor, config.upstream, config.upstream_ca_bundle, answered, wrong))
    asking.addErrback(lambda failure: failure.trap(defer.CancelledError))
    return asking
