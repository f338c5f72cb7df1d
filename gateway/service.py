"""
Wiring: from a frozen configuration to a running gateway — the key store,
the SQLite store, the upstream client, the v1 face and its listener.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

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
from gateway.store import SQLiteStore
from gateway.translate.context import Context, Policy
from gateway.translate.recovery import recover
from gateway.upstream.client import UpstreamClient
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

    async def stop(self) -> None:
        """
        Stop accepting, let the requests in flight finish within the grace
        period, then close everything.
        """
        if self.sweep is not None and self.sweep.running:
            self.sweep.stop()
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


async def start(reactor: Any, config: ServeConfig, keys: Optional[KeyStore] = None) -> RunningGateway:
    """
    Open the state, build the object graph and listen.
    """
    if keys is None:
        keys = KeyStore.load(config.keys, allow_shared=config.allow_shared_key_files)
        report_key_store(keys)
    # The gateway closes the store itself, after requests in flight finish.
    # Bound to --upstream: nothing of a CA the state was used with before
    # (account URLs, orders, authorizations) is used with this one.
    store = await SQLiteStore.open(config.state, reactor=reactor, close_on_shutdown=False,
                                   upstream=config.upstream)
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
        try:
            http01_port = await endpoints.serverFromString(reactor, config.http01_listen).listen(http01_site)
        except Exception:
            await store.close()
            raise
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
        managed = ManagedKeys.open(config.managed_keys or config.state + ".managed-keys")
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
    endpoint = endpoints.serverFromString(reactor, config.listen)
    try:
        port = await endpoint.listen(site)
    except Exception:
        if http01_port is not None:
            await http01_port.stopListening()
        await store.close()
        raise
    readiness = Readiness(upstream, store, reactor, metrics=metrics, max_age=config.ready_max_age)
    admin_port = None
    if config.admin_listen:
        admin = Admin(store, reactor, metrics, readiness, migrated_after=config.migrated_after,
                      budget=context.budget, recorder=recorder)
        try:
            admin_port = await endpoints.serverFromString(reactor, config.admin_listen).listen(admin.site())
        except Exception:
            await port.stopListening()
            if http01_port is not None:
                await http01_port.stopListening()
            await store.close()
            raise
        log.info("acme-gateway admin listener on {address}", address=admin_port.getHost())
    try:
        await upstream.directory()
        readiness.upstream_answered()
    except Exception as error:
        log.warn("upstream directory {url} did not answer yet: {error}",
                 url=config.upstream, error=str(error))
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
                          shutdown_grace=config.shutdown_grace)
