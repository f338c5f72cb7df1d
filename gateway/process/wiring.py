"""
Wiring: from a frozen configuration to the object graph of one gateway.

`build_gateway` is the one place the graph is made — the upstream client
(with its account recovery), the translation context, the budget, the
responders, the v1 face and its site, the metrics, the migration report's
recorder, readiness and the admin pages — for ``acme-gateway serve`` and
``demo`` (`gateway.process.serve`, which opens the state, listens and
runs the sweeps) and for the test doubles (`gateway.process.testing`,
which give it a fake CA and an in-memory store).  What differs between
them is passed in: the clock, the store, how to reach a CA over HTTP, and
how to run blocking work.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional, Tuple

import attrs
from twisted.internet import threads
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorThreads, IReactorTime

from gateway.keys.keystore import KeyStore
from gateway.keys.managed import ManagedKeys, RunInThread, run_inline
from gateway.operations.admin import DEFAULT_READY_MAX_AGE, Admin, Readiness
from gateway.operations.metrics import Metrics
from gateway.operations.report import DEFAULT_MIGRATED_AFTER, ClientRecorder
from gateway.store import IStore, is_shared_state
from gateway.translate.accounts import AccountRecovery
from gateway.translate.bindings import AccountBindings
from gateway.translate.budget import Budget, BudgetLimits
from gateway.translate.context import Context, Policy
from gateway.translate.memory import NameLocks, OtherCAs, Revalidations
from gateway.translate.policy import AllowedNames
from gateway.translate.profiles import ProfilePolicy
from gateway.translate.renewalinfo import RenewalInfoPoller
from gateway.translate.revalidation import Validators
from gateway.translate.signing import SigningKeys
from gateway.upstream.client import UpstreamClient, https_client
from gateway.v1.face import V1Face
from gateway.v1.limits import DEFAULT_MAX_BODY, V1Site
from gateway.v1.nonces import InstanceNonceIssuer, NonceIssuer
from gateway.v1.resource import v1_tree
from gateway.v2.endpoint import KidKeys
from gateway.v2.face import V2Face
from gateway.v2.resource import v2_tree
from gateway.validation.dns01 import (
    HookDNS01Responder,
    RFC2136DNS01Responder,
    TSIGKey,
    responders_by_type,
)
from gateway.validation.http01 import HTTP01Responder
from gateway.validation.tlssni01 import DEFAULT_CHECK_PORT, TLSSNI01Checker
from gateway.web import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ListenerLimits,
    ListenerSite,
)

#: The treq HTTP client for the CA at a directory URL (a
#: ``treq.testing.StubTreq`` of a fake CA in tests).
HTTPFor = Callable[[str], HTTPClient]


@attrs.frozen
class ServeConfig:
    """
    Everything ``acme-gateway serve`` needs, checked by the command line.
    """

    upstream: str
    keys: str
    upstream_ca_bundle: Optional[str] = None
    state: str = "./acme-gateway.sqlite3"
    #: The PostgreSQL password, kept apart from ``state`` (which never holds
    #: it) and out of every repr.
    state_password: Optional[str] = attrs.field(default=None, repr=False)
    #: Processes serving the listeners (``--workers``).
    workers: int = 1
    #: Listening sockets inherited from a ``--workers`` supervisor, as
    #: ``((flag, fd), …)``: this process is one of its workers.
    inherited: Tuple[Tuple[str, int], ...] = ()
    listen: str = "tcp:4000:interface=127.0.0.1"
    base_url: Optional[str] = None
    agree_to_terms: bool = True
    request_timeout: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    #: Load key files their group or others may read (``--allow-shared-key-files``).
    allow_shared_key_files: bool = False
    admin_listen: Optional[str] = None
    #: The admin pages' bearer token (read from ``--admin-token-file``).
    admin_token: Optional[str] = attrs.field(default=None, repr=False)
    migrated_after: float = DEFAULT_MIGRATED_AFTER
    ready_max_age: float = DEFAULT_READY_MAX_AGE
    http01_listen: Optional[str] = None
    dns01_hook: Optional[str] = None
    dns01_rfc2136: Optional[Tuple[str, int]] = None
    dns01_rfc2136_key_name: Optional[str] = None
    dns01_rfc2136_key_secret: Optional[str] = attrs.field(default=None, repr=False)
    dns01_rfc2136_key_algorithm: str = "hmac-sha256"
    dns01_rfc2136_zone: Optional[str] = None
    dns01_propagation_seconds: float = 0.0
    challenge_preference: Tuple[str, ...] = ("http-01", "dns-01")
    #: Where tls-sni-01 answers are checked (``--tls-sni-check-port``,
    #: ``--tls-sni-check-resolver``; the system resolver when `None`).
    tls_sni_check_port: int = DEFAULT_CHECK_PORT
    tls_sni_check_resolver: Optional[Tuple[str, int]] = None
    unknown_keys: str = "reject"
    managed_keys: Optional[str] = None
    #: ``--allow-names``: the only names any account may get (none: any).
    allow_names: Tuple[str, ...] = ()
    budget: BudgetLimits = BudgetLimits()
    shutdown_grace: float = 10.0
    bad_nonce_retries: int = 5
    #: Each listener's limits (``--max-connections``, ``--header-timeout``,
    #: ``--idle-timeout``).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: ``--profile`` and the config file's ``[[profile-rule]]`` tables.
    profiles: ProfilePolicy = ProfilePolicy()
    #: ``--eab-kid``/``--eab-hmac-key`` and ``--eab-file``.
    bindings: AccountBindings = attrs.field(default=AccountBindings(), repr=False)
    #: Order a known certificate's whole name set at the first new-authz of
    #: its renewal (off only to measure what planning saves).
    plan_renewals: bool = True

    @property
    def listener_limits(self) -> ListenerLimits:
        """
        What a connection may take of any listener (the v1 face's site
        adds its ``--max-body``).
        """
        return ListenerLimits(max_connections=self.max_connections,
                              header_timeout=self.header_timeout,
                              idle_timeout=self.idle_timeout)

    @property
    def managed_keys_directory(self) -> str:
        """
        Where managed-mode keys are kept (``--managed-keys``, by default
        beside ``--state``).
        """
        return self.managed_keys or self.state + ".managed-keys"


@attrs.frozen
class Gateway:
    """
    The object graph of one gateway, before anything listens.

    :ivar face: the v1 face (the v1 listener's root resource, which hands
        ``/v2/…`` to ``v2_face``), and ``site`` its site (bodies above
        ``--max-body`` refused as they arrive).
    :ivar admin: the admin listener's pages, and ``admin_site`` its site.
    :ivar renewal_info: the poller of the CA's suggested renewal windows
        (ARI), run by a timer of the serving process.
    :ivar http01: the built-in HTTP-01 responder (``--http01-listen``), and
        ``http01_site`` its site.  Every site is bounded by the listener
        limits (`gateway.web.ListenerSite`).
    """

    config: ServeConfig
    clock: IReactorTime
    store: IStore
    keys: KeyStore
    upstream: UpstreamClient
    context: Context
    metrics: Metrics
    recorder: ClientRecorder
    nonces: NonceIssuer
    face: V1Face
    site: V1Site
    readiness: Readiness
    admin: Admin
    admin_site: ListenerSite
    renewal_info: RenewalInfoPoller
    http01: Optional[HTTP01Responder] = None
    http01_site: Optional[ListenerSite] = None
    v2_face: Optional[V2Face] = None


def https_clients(reactor: Any, ca_bundle: Optional[str]) -> HTTPFor:
    """
    One treq client over real connections for every CA (`gateway.upstream.
    client.https_client`), trusting ``ca_bundle`` when given.
    """
    client = https_client(reactor, ca_bundle)
    return lambda directory_url: client


def in_threads(reactor: IReactorThreads) -> RunInThread:
    """
    Run blocking work on ``reactor``'s thread pool.
    """
    return lambda work, *args: threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                                         work, *args)


def serves_state_alone(config: ServeConfig) -> bool:
    """
    Whether this process is the only one serving its state, so that its v1
    nonces may be redeemed in its own memory (`gateway.v1.nonces.
    InstanceNonceIssuer`): an SQLite file, ``--workers 1``, and no
    listener inherited from a ``--workers`` supervisor (its workers run with
    ``--workers 1``).  A PostgreSQL state is for several processes and
    replicas — one process alone on it cannot know that none runs beside
    it — so its nonces go to the store, as do a supervisor's workers'.

    Two processes started by hand on one SQLite file (not through
    ``--workers``) each take themselves for alone: each refuses the other's
    nonces (a client sent from one to the other retries), and still none is
    ever accepted twice.
    """
    return config.workers == 1 and not config.inherited and not is_shared_state(config.state)


def build_gateway(
    config: ServeConfig,
    *,
    clock: Any,
    keys: KeyStore,
    store: IStore,
    http_for: HTTPFor,
    run_in_thread: RunInThread = run_inline,
    metrics: Optional[Metrics] = None,
    validators: Optional[Validators] = None,
    nonce_key: Optional[bytes] = None,
    nonces_alone: bool = False,
) -> Gateway:
    """
    The gateway of ``config``.

    :param clock: the reactor (``IReactorTime``; an ``IReactorProcess`` and
        ``IReactorUDP`` too when a dns-01 means is configured).
    :param store: the opened state, bound to ``config.upstream``.
    :param http_for: the HTTP client for the CA at a directory URL
        (`https_clients`; ``StubTreq`` of a fake CA in tests).
    :param run_in_thread: how blocking work runs (making a managed key).
    :param metrics: the Prometheus families (a fresh registry by default).
    :param validators: the gateway's own responders, instead of those the
        configuration names (tests).
    :param nonce_key: the key of the v1 nonces, shared by every process of
        the state (``IStore.secret``); a random one for a process alone.
    :param nonces_alone: redeem v1 nonces in this process's memory, not at
        the store (`serves_state_alone`); by default, the store.
    :raises ValueError, OSError: when ``--managed-keys`` cannot be used.
    """
    if metrics is None:
        metrics = Metrics()

    def upstream_client(directory_url: str,
                        recovery: Optional[AccountRecovery] = None) -> UpstreamClient:
        return UpstreamClient(
            directory_url, http_for(directory_url), clock,
            request_timeout=config.request_timeout,
            metrics=metrics,
            max_nonce_retries=config.bad_nonce_retries,
            account_recovery=recovery,
        )

    upstream = upstream_client(config.upstream,
                               AccountRecovery(store, clock, config.agree_to_terms,
                                               config.bindings))
    # Answers go to the state too: another process of it may get the CA's request.
    http01 = HTTP01Responder(store, clock) if config.http01_listen else None
    if validators is None:
        validators = _validators(config, clock, http01)
    managed = None
    if config.unknown_keys == "managed":
        managed = ManagedKeys.open(config.managed_keys_directory, run_in_thread)
    locks = NameLocks(store, clock)
    budget = Budget(store, clock, config.budget)
    context = Context(
        upstream=upstream,
        store=store,
        keys=SigningKeys(keys, managed),
        clock=clock,
        budget=budget,
        policy=Policy(agree_to_terms=config.agree_to_terms,
                      allowed_names=(AllowedNames.parse(config.allow_names)
                                     if config.allow_names else None),
                      profiles=config.profiles, bindings=config.bindings,
                      plan_renewals=config.plan_renewals),
        validators=validators,
        revalidations=Revalidations(metrics),
        other_cas=OtherCAs(upstream, upstream_client),
        locks=locks,
    )
    recorder = ClientRecorder(store, clock=clock)
    nonces = _nonce_issuer(clock, store, nonce_key, nonces_alone)
    v2_face = V2Face(v2_tree(context), nonces, clock, KidKeys(context), base_url=config.base_url,
                     max_body=config.max_body, recorder=recorder, metrics=metrics)
    face = V1Face(v1_tree(context), nonces, clock, base_url=config.base_url,
                  max_body=config.max_body, metrics=metrics, recorder=recorder,
                  mounted=(v2_face,))
    # The v1 face logs each request itself (`gateway.web.QuietSite`).
    limits = config.listener_limits
    site = V1Site(face, limits, reactor=clock)
    readiness = Readiness(upstream, store, clock, metrics=metrics, max_age=config.ready_max_age,
                          keys=keys, managed=managed is not None)
    admin = Admin(store, clock, metrics, readiness, migrated_after=config.migrated_after,
                  budget=budget, recorder=recorder, token=config.admin_token)
    return Gateway(
        config=config, clock=clock, store=store, keys=keys, upstream=upstream, context=context,
        metrics=metrics, recorder=recorder, nonces=nonces, face=face, site=site,
        readiness=readiness, admin=admin, admin_site=admin.site(limits, reactor=clock),
        renewal_info=RenewalInfoPoller(upstream, store, clock),
        http01=http01,
        http01_site=None if http01 is None else ListenerSite(http01, limits, reactor=clock),
        v2_face=v2_face,
    )


def _nonce_issuer(clock: Any, store: IStore, key: Optional[bytes], alone: bool) -> NonceIssuer:
    """
    The v1 nonces: redeemed in this process's memory when it serves its
    state ``alone``, else at the store.
    """
    if key is None:
        key = secrets.token_bytes(32)
    if alone:
        return InstanceNonceIssuer(clock, key=key)
    return NonceIssuer(clock, store, key=key)


def _validators(config: ServeConfig, reactor: Any,
                http01: Optional[HTTP01Responder]) -> Validators:
    """
    The responders the configuration names: the HTTP-01 resource, a dns-01
    hook, RFC 2136 updates; and with any of them, the tls-sni-01 check
    (v1 authorizations offer tls-sni-01 only when the gateway can then
    prove the name upstream).
    """
    responders: list = [http01] if http01 is not None else []
    if config.dns01_hook:
        responders.append(HookDNS01Responder(
            reactor, config.dns01_hook, propagation_seconds=config.dns01_propagation_seconds))
    if config.dns01_rfc2136:
        key = None
        if config.dns01_rfc2136_key_name and config.dns01_rfc2136_key_secret:
            key = TSIGKey(config.dns01_rfc2136_key_name, config.dns01_rfc2136_key_secret,
                          config.dns01_rfc2136_key_algorithm)
        host, dns_port = config.dns01_rfc2136
        responders.append(RFC2136DNS01Responder(
            reactor, host, dns_port, key=key, zone=config.dns01_rfc2136_zone,
            propagation_seconds=config.dns01_propagation_seconds))
    checker = None
    if responders:
        checker = TLSSNI01Checker(reactor, port=config.tls_sni_check_port,
                                  resolver=config.tls_sni_check_resolver)
    return Validators(responders_by_type(responders), config.challenge_preference, checker)
