"""
Running a gateway: open the state, build the graph (`gateway.process.
wiring.build_gateway`), complete what a crash left unfinished, then serve —
every listener and the sweeps as services of one `GatewayService` — until
the process stops.

Start-up fails fast, naming the setting that stopped it (`StartError`): a
state file that cannot be opened, a listener that cannot listen, a
managed-key directory that cannot be used, an ``--upstream`` that answers
and is no usable ACME v2 directory.  An upstream that does not answer yet
only delays service to v1 clients: it is asked again until it answers
(`gateway.upstream.startup`), and stops the gateway if that answer shows
the URL was wrong after all.

At shutdown the services stop in turn, the reverse of the order they
started in: the upstream watch and the sweeps, the v1 listener, then the
requests in flight (within ``--shutdown-grace``), the admin listener, the
background work and the report's last visits, the HTTP-01 responder, and
last the store.

`run` is the command line's reactor loop (``task.react``), shared by
``serve`` and ``demo``.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Callable, Coroutine, List, Optional

import attrs
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, endpoints, task
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.keys.keystore import KeyStore
from gateway.process.workers import InheritedEndpoint
from gateway.process.wiring import (
    Gateway,
    ServeConfig,
    build_gateway,
    https_clients,
    in_threads,
    serves_state_alone,
)
from gateway.store import IStore, is_shared_state, open_store
from gateway.translate.context import Context
from gateway.translate.recovery import recover
from gateway.translate.sweeps import SWEEP_LOCK, sweep
from gateway.process.upstream_options import profiles_problem
from gateway.upstream.messages import Directory
from gateway.v1.nonces import NONCE_KEY_NAME
from gateway.upstream.startup import Diagnosis, diagnose, keep_asking
from gateway.web import quiesce

log = Logger()

#: How long start-up waits for recovery before serving anyway (recovery
#: then continues with the sweeps).
RECOVERY_AT_START_SECONDS = 15.0


class StartCancelled(Exception):
    """
    The process was told to stop (SIGTERM) before start-up finished; what
    start-up opened is being closed.
    """


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


def report_key_store(keys: KeyStore, out: IO[str] = sys.stderr) -> None:
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


def _state_problem(path: str, error: BaseException, password: Optional[str] = None) -> str:
    """
    Why the state database cannot be opened, in terms an operator can act
    on (SQLite only says "unable to open database file"); never with the
    PostgreSQL ``password``.
    """
    if is_shared_state(path):
        from gateway.store.postgresql import StateURI

        return StateURI(path, password).scrub(f"cannot open the state database: {error}")
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


@implementer(IStreamServerEndpoint)
class _Listening:
    """
    An endpoint that tells whether it got to listen: `port` fires with the
    listening port, or fails with a `StartError` naming the flag.  (The
    `StreamServerEndpointService` it serves then sees no port, and has
    nothing to stop.)
    """

    def __init__(self, reactor: Any, flag: str, description: str,
                 inherited: Optional[int] = None) -> None:
        self.flag = flag
        self.description = description
        self.port: "defer.Deferred[IListeningPort]" = defer.Deferred()
        try:
            if inherited is not None:
                # A --workers supervisor bound it (`gateway.process.workers`).
                self._endpoint = InheritedEndpoint(reactor, description, inherited)
            else:
                self._endpoint = endpoints.serverFromString(reactor, description)
        except Exception as error:
            raise StartError(flag, description, f"cannot listen: {error}") from error

    def listen(self, factory: Any) -> "defer.Deferred[Optional[IListeningPort]]":  # type: ignore[override]
        listening: "defer.Deferred[Any]" = self._endpoint.listen(factory)

        def listened(port: IListeningPort) -> IListeningPort:
            self.port.callback(port)
            return port

        def refused(failure: Failure) -> None:
            self.port.errback(StartError(self.flag, self.description,
                                         f"cannot listen: {failure.value}"))
            return None

        return listening.addCallbacks(listened, refused)


class GatewayService(MultiService):
    """
    The services of a running gateway, stopped one after the other, in the
    reverse of their order (a `MultiService` stops them all at once: the
    store would close under requests still running).
    """

    def stopService(self) -> "defer.Deferred[None]":
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_in_turn())

    async def _stop_in_turn(self) -> None:
        for child in reversed(list(self)):
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {service} failed", service=child.name)


class AtStop(Service):
    """
    A service whose whole job is one step of the shutdown.
    """

    def __init__(self, name: str,
                 step: Callable[[], "Coroutine[Any, Any, None] | defer.Deferred[None]"]) -> None:
        self.setName(name)
        self._step = step

    def stopService(self) -> "defer.Deferred[None]":
        Service.stopService(self)
        return defer.ensureDeferred(self._step())


@attrs.define
class RunningGateway:
    """
    A started gateway: what to stop, and what tests may inspect.

    :ivar port: the v1 listener's port; ``admin_port`` and ``http01_port``
        those of the admin listener and the HTTP-01 responder, if any.
    :ivar upstream_watch: the asking of an upstream that was not reachable
        at start-up, until it answers.
    """

    gateway: Gateway
    service: GatewayService
    port: IListeningPort
    admin_port: Optional[IListeningPort] = None
    http01_port: Optional[IListeningPort] = None
    upstream_watch: "Optional[defer.Deferred[None]]" = None

    @property
    def context(self) -> Context:
        return self.gateway.context

    @property
    def store(self) -> Any:
        return self.gateway.store

    @property
    def readiness(self) -> Any:
        return self.gateway.readiness

    async def stop(self) -> None:
        """
        Stop accepting, let the requests in flight finish within the grace
        period, then close everything.
        """
        if self.service.running:
            await self.service.stopService()


async def _recover_before_serving(reactor: Any, context: Context) -> None:
    """
    Complete from the CA what a crash left unfinished (`gateway.translate.
    recovery`) before the first client is served, within
    `RECOVERY_AT_START_SECONDS`; a CA that does not answer only delays it.
    """
    # One process of the state recovers; the others serve meanwhile.
    attempt = defer.Deferred.fromCoroutine(context.locks.alone(SWEEP_LOCK, lambda: recover(context)))
    attempt.addTimeout(RECOVERY_AT_START_SECONDS, reactor)
    try:
        await attempt
    except Exception as error:
        # Whatever stopped it (a timeout, a CA or store failure), the sweeps
        # run recovery again: serving must not wait for the CA.
        log.warn("recovery at start-up did not finish ({error}); the sweeps will retry",
                 error=str(error) or type(error).__name__)


class _Sweeps:
    """
    The periodic sweeps (`gateway.translate.sweeps`), for a `TimerService`,
    which calls at once when it starts: that first call is skipped, recovery
    having just run before serving.  A failure is logged; the next period
    tries again.
    """

    def __init__(self, context: Context, request_timeout: float) -> None:
        self._context = context
        self._request_timeout = request_timeout
        self._started = False

    async def _sweep(self) -> None:
        await sweep(self._context, self._request_timeout)

    def __call__(self) -> "Optional[defer.Deferred[None]]":
        if not self._started:
            self._started = True
            return None
        sweeping: "defer.Deferred[None]" = defer.Deferred.fromCoroutine(
            self._sweep())
        return sweeping.addErrback(
            lambda failure: log.failure("abandoned-authorization sweep failed", failure))


#: How often the renewal-info timer looks for certificates whose window is
#: due to be asked for (each is asked twice a day, or per ``Retry-After``).
RENEWAL_INFO_TICK = 600.0


class _RenewalInfoTicks:
    """
    The ARI poller (`gateway.translate.renewalinfo.RenewalInfoPoller`) for
    a `TimerService`: each tick asks for the windows that are due, one
    tick at a time; a failure (the CA away) is logged and the next tick
    tries again.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._running: "Optional[defer.Deferred[int]]" = None

    def __call__(self) -> None:
        # Returns nothing: a `TimerService` stops only once the call it is
        # given has finished, and a poll of a CA that does not answer (at
        # start-up, or a CA gone silent) must never hold a shutdown.
        if self._running is not None:
            return
        running = defer.Deferred.fromCoroutine(self._gateway.renewal_info.poll_due())
        self._running = running

        def done(result: Any) -> None:
            self._running = None
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                log.warn("renewalInfo poll failed: {error}", error=result.getErrorMessage())

        running.addBoth(done)

    async def cancel(self) -> None:
        """
        Give up the poll in flight, at shutdown (best effort: the process
        does not wait for it).
        """
        if self._running is not None:
            self._running.cancel()


async def start(reactor: Any, config: ServeConfig, keys: Optional[KeyStore] = None,
                on_fatal: Optional[Callable[[StartError], None]] = None) -> RunningGateway:
    """
    Open the state, build the gateway, listen, and ask the upstream for its
    directory.

    :param on_fatal: called when an upstream that could not be reached at
        start-up later answers, and is not a usable ACME v2 directory.
    :raises StartError: naming the setting that stopped it; whatever was
        opened is closed again.
    """
    if keys is None:
        keys = KeyStore.load(config.keys, allow_shared=config.allow_shared_key_files)
        report_key_store(keys)
    service = GatewayService()
    opened: "List[IStore]" = []
    settled: List[bool] = []
    waiters: "List[defer.Deferred[None]]" = []
    told_to_stop: List[bool] = []

    def note(result: Any) -> Any:
        if not isinstance(result, Failure):
            opened.append(result)
        settled.append(True)
        for waiter in waiters:
            waiter.callback(None)
        return result

    async def stop_starting() -> None:
        told_to_stop.append(True)
        if not settled:
            waiter: "defer.Deferred[None]" = defer.Deferred()
            waiters.append(waiter)
            await waiter
        if service.running:
            await service.stopService()
        elif opened:
            await opened[0].close()

    # Told to stop while starting (SIGTERM with the store opening, recovery or
    # the directory fetch pending): stop what was opened, or the store's
    # thread would keep the process alive after the reactor stopped.  Once
    # started, the caller's `stop_at_shutdown` takes over.
    stopping_early = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromCoroutine(stop_starting()))
    try:
        try:
            # The gateway closes the store itself, after requests in flight
            # finish.  Bound to --upstream: nothing of a CA the state was used
            # with before (account URLs, orders, authorizations) is used with
            # this one.
            store = await defer.ensureDeferred(open_store(
                config.state, reactor=reactor, close_on_shutdown=False,
                upstream=config.upstream, password=config.state_password)).addBoth(note)
        except Exception as error:
            raise StartError("--state", config.state,
                             _state_problem(config.state, error, config.state_password)
                             ) from error
        if told_to_stop:
            raise StartCancelled("told to stop while opening the state")
        AtStop("store", store.close).setServiceParent(service)
        try:
            # Every process of the state signs v1 nonces with the same key.
            nonce_key = await store.secret(NONCE_KEY_NAME)
        except Exception as error:
            raise StartError("--state", config.state,
                             _state_problem(config.state, error, config.state_password)
                             ) from error
        try:
            gateway = build_gateway(config, clock=reactor, keys=keys, store=store,
                                    http_for=https_clients(reactor, config.upstream_ca_bundle),
                                    run_in_thread=in_threads(reactor), nonce_key=nonce_key,
                                    nonces_alone=serves_state_alone(config))
        except (OSError, ValueError) as error:
            raise StartError("--managed-keys", config.managed_keys_directory,
                             f"cannot use the managed-key directory: {error}") from error
        await _recover_before_serving(reactor, gateway.context)
        if told_to_stop:
            raise StartCancelled("told to stop while recovering")
        running = await _serve(reactor, gateway, service, on_fatal)
    except BaseException:
        if not told_to_stop:
            reactor.removeSystemEventTrigger(stopping_early)
            await stop_starting()
        raise
    reactor.removeSystemEventTrigger(stopping_early)
    return running


async def _serve(reactor: Any, gateway: Gateway, service: GatewayService,
                 on_fatal: Optional[Callable[[StartError], None]]) -> RunningGateway:
    config = gateway.config
    listeners: List[_Listening] = []

    inherited = dict(config.inherited)

    def listener(flag: str, description: str, factory: Any) -> _Listening:
        listening = _Listening(reactor, flag, description, inherited.get(flag))
        StreamServerEndpointService(listening, factory).setServiceParent(service)
        listeners.append(listening)
        return listening

    http01 = None
    if gateway.http01_site is not None and config.http01_listen:
        http01 = listener("--http01-listen", config.http01_listen, gateway.http01_site)
    AtStop("background", lambda: _finish_background(gateway)).setServiceParent(service)
    admin = None
    if config.admin_listen:
        admin = listener("--admin-listen", config.admin_listen, gateway.admin_site)
    AtStop("requests in flight", lambda: _quiesce(gateway)).setServiceParent(service)
    v1 = listener("--listen", config.listen, gateway.site)
    if config.budget.abandoned_after:
        interval = max(1.0, min(300.0, config.budget.abandoned_after / 4))
        sweeps = TimerService(interval, _Sweeps(gateway.context, config.request_timeout))
        sweeps.clock = reactor
        sweeps.setServiceParent(service)
    ticks = _RenewalInfoTicks(gateway)
    renewal_info = TimerService(RENEWAL_INFO_TICK, ticks)
    renewal_info.clock = reactor
    renewal_info.setServiceParent(service)
    # Stopped before the timer (a MultiService stops its children last first).
    AtStop("renewalInfo poll", ticks.cancel).setServiceParent(service)
    watch: "List[defer.Deferred[None]]" = []
    AtStop("upstream watch", lambda: _cancel(watch)).setServiceParent(service)
    service.startService()
    # Every listener reports; a failure names the first setting in the
    # order ``serve --help`` lists them, and the caller stops the others.
    results = await defer.DeferredList([listening.port for listening in listeners],
                                       consumeErrors=True)
    order = ("--listen", "--http01-listen", "--admin-listen")
    failed = sorted(((order.index(listening.flag), result) for listening, (_, result)
                     in zip(listeners, results) if isinstance(result, Failure)),
                    key=lambda pair: pair[0])
    if failed:
        failed[0][1].raiseException()
    port = await v1.port
    gateway.readiness.listeners = (("v1", port),)
    admin_port = await admin.port if admin is not None else None
    if admin_port is not None:
        log.info("acme-gateway admin listener on {address}", address=admin_port.getHost())
        if config.admin_token is None and not _on_loopback(admin_port):
            log.warn("the admin listener ({endpoint}) is reachable beyond loopback and asks for "
                     "no token: anyone who reaches it reads client names, addresses and "
                     "thumbprints. Give it --admin-token-file, or an interface=127.0.0.1",
                     endpoint=config.admin_listen)
    try:
        directory = await gateway.upstream.directory()
        gateway.readiness.upstream_answered()
    except Exception as error:
        diagnosis = diagnose(error, config.upstream, config.upstream_ca_bundle)
        if diagnosis.wrong:
            raise StartError("--upstream", config.upstream, diagnosis.reason) from error
        log.warn("upstream directory {url} is not reachable (yet): {reason}; the gateway serves "
                 "and keeps asking (v1 clients get serverInternal until it answers)",
                 url=config.upstream, reason=diagnosis.reason)
        watch.append(_keep_asking(reactor, gateway, on_fatal))
    else:
        refusal = _ca_policy_refusal(gateway, directory)
        if refusal is not None:
            raise refusal
    log.info("acme-gateway v1 face listening on {address}", address=port.getHost())
    return RunningGateway(gateway=gateway, service=service, port=port, admin_port=admin_port,
                          http01_port=await http01.port if http01 is not None else None,
                          upstream_watch=watch[0] if watch else None)


def _on_loopback(port: IListeningPort) -> bool:
    """
    Whether a listening port is bound to a loopback address only.
    """
    import ipaddress

    try:
        return ipaddress.ip_address(getattr(port.getHost(), "host", "")).is_loopback
    except ValueError:
        return False


async def _quiesce(gateway: Gateway) -> None:
    left = await quiesce(gateway.face, gateway.clock, gateway.config.shutdown_grace)
    if left:
        log.warn("shutdown: {count} request(s) still running after the grace period", count=left)


async def _finish_background(gateway: Gateway) -> None:
    await gateway.context.background.drain()
    await gateway.recorder.flush()


async def _cancel(watch: "List[defer.Deferred[None]]") -> None:
    for asking in watch:
        asking.cancel()


def _keep_asking(reactor: Any, gateway: Gateway,
                 on_fatal: Optional[Callable[[StartError], None]]) -> "defer.Deferred[None]":
    """
    Ask the upstream directory until it answers (`gateway.upstream.startup`);
    an answer that shows ``--upstream`` is wrong is fatal, as at start-up.
    """
    config = gateway.config

    def answered() -> None:
        gateway.readiness.upstream_answered()
        log.info("upstream directory {url} answered", url=config.upstream)
        checked = defer.Deferred.fromCoroutine(gateway.upstream.directory())
        checked.addCallback(lambda directory: _fatal(_ca_policy_refusal(gateway, directory)))
        checked.addErrback(lambda failure: log.failure("checking the CA's directory", failure))

    def _fatal(error: Optional[StartError]) -> None:
        if error is None:
            return
        log.critical("{error}", error=str(error))
        if on_fatal is not None:
            on_fatal(error)

    def wrong(diagnosis: Diagnosis) -> None:
        error = StartError("--upstream", config.upstream, diagnosis.reason)
        log.critical("{error}", error=str(error))
        if on_fatal is not None:
            on_fatal(error)

    asking: "defer.Deferred[None]" = defer.Deferred.fromCoroutine(keep_asking(
        gateway.upstream, reactor, config.upstream, config.upstream_ca_bundle, answered, wrong))
    asking.addErrback(lambda failure: failure.trap(defer.CancelledError))
    return asking


def _ca_policy_refusal(gateway: Gateway, directory: Directory) -> Optional[StartError]:
    """
    What the CA's directory says about the policy the gateway was given:
    a profile the CA does not offer is a start-up error naming the ones it
    does; a CA that requires External Account Binding while the gateway
    has no credentials is worth a warning (existing accounts still work,
    new ones are refused with a v1 error naming ``--eab-kid``).
    """
    config = gateway.config
    problem = profiles_problem(config.profiles, directory)
    if problem is not None:
        if config.profiles.default is not None and config.profiles.default not in directory.profiles:
            return StartError("--profile", config.profiles.default, problem)
        return StartError("--config", origin_of_rules(), problem)
    if directory.external_account_required and not config.bindings.configured:
        log.warn("the upstream CA requires External Account Binding for new accounts and no "
                 "--eab-kid/--eab-hmac-key (or --eab-file) is set: clients whose account does "
                 "not exist at the CA yet are refused until one is")
    if directory.renewal_info is not None:
        log.info("the upstream CA offers ARI (renewalInfo): renewal orders carry replaces, and "
                 "suggested renewal windows are polled")
    return None


def origin_of_rules() -> str:
    """
    Where the profile rules came from: the config file.
    """
    from gateway.process.config import current_layers

    return current_layers().file_path or "(config file)"


def run(main: Callable[[Any], Coroutine[Any, Any, None]]) -> int:
    """
    Run the reactor until ``main(reactor)`` ends or the process is told to
    stop (``task.react``), and return the exit status: 0, or the code of a
    `SystemExit` that ``main`` raised.  The shutdown triggers ``main``
    registered (stopping the gateway) run before the reactor stops.
    """
    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    return 0


def stop_at_shutdown(reactor: Any, running: RunningGateway) -> None:
    """
    Stop ``running`` gracefully when the reactor shuts down (SIGTERM,
    Ctrl-C, or `run`'s ``main`` ending), before it stops.
    """
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: defer.Deferred.fromCoroutine(running.stop()))
