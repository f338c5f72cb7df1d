"""
``acme-gateway serve --workers N``: one set of listeners served by N
processes on one state.

One CPython process spends its one core on JWS checks, signatures and
Twisted's HTTP machinery; a busy gateway needs more.  The supervisor (the
process the operator started) binds each listener's socket itself, then
starts N workers — ``acme-gateway serve`` with the same arguments and
``--workers 1`` — each inheriting the sockets (their descriptors named in
`LISTENERS_VARIABLE`), so the kernel hands each new connection to whichever
worker accepts first, with no port of their own and no proxy in between.
The workers share the state: SQLite in WAL mode, where ``BEGIN IMMEDIATE``
and a busy timeout order their writes, or PostgreSQL; nonces, per-name
locks, budgets and sweeps are correct across processes (the store's
shared locks and transactions).

The supervisor does nothing else: on SIGTERM or SIGINT it passes the signal
to every worker and exits when they have (each finishes its requests in
flight within ``--shutdown-grace``).  A worker that dies — a crash, ``kill
-9``, the OOM killer — is started again after a second; one that exits
during its first seconds (a setting it cannot use) stops the whole
gateway with its exit status, as a single process would.

The admin listener and the HTTP-01 responder are shared the same way:
``/healthz``, ``/readyz`` and ``/metrics`` answer for the worker that
accepted the connection (``/status`` and the budget come from the state,
whole).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import endpoints
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

#: The variable naming the sockets a worker inherits: ``--listen=3,--admin-listen=4``.
LISTENERS_VARIABLE = "ACME_GATEWAY_WORKER_LISTENERS"

#: A worker that exits within this many seconds of its start failed to
#: start: the supervisor stops, rather than starting it again and again.
STARTUP_SECONDS = 10.0

#: Seconds between a worker's death and its next start.
RESTART_DELAY_SECONDS = 1.0

_FLAGS = ("--listen", "--admin-listen", "--http01-listen")


def parse_listeners(text: str) -> Tuple[Tuple[str, int], ...]:
    """
    The ``((flag, fd), …)`` of `LISTENERS_VARIABLE`'s value.
    """
    found = []
    for item in text.split(","):
        flag, _, fd = item.strip().partition("=")
        if flag in _FLAGS and fd.isdigit():
            found.append((flag, int(fd)))
    return tuple(found)


def _endpoint(description: str) -> Any:
    from twisted.internet import reactor

    return endpoints.serverFromString(reactor, description)


def check_shareable(description: str) -> Optional[str]:
    """
    Why a listener cannot be shared by workers, or `None` when it can
    (``tcp:``, ``tcp6:`` and ``ssl:`` endpoints).
    """
    try:
        endpoint = _endpoint(description)
    except Exception as error:
        return f"not a server endpoint: {error}"
    if not isinstance(endpoint, (endpoints.TCP4ServerEndpoint, endpoints.TCP6ServerEndpoint,
                                 endpoints.SSL4ServerEndpoint)):
        return "--workers shares only tcp:, tcp6: and ssl: listeners"
    return None


def bind(description: str) -> socket.socket:
    """
    A listening socket for a ``tcp:``, ``tcp6:`` or ``ssl:`` endpoint, as
    Twisted would have bound it (port, interface, backlog).
    """
    endpoint = _endpoint(description)
    family = (socket.AF_INET6 if isinstance(endpoint, endpoints.TCP6ServerEndpoint)
              else socket.AF_INET)
    interface = endpoint._interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((interface, endpoint._port))
    sock.listen(endpoint._backlog)
    # Non-blocking for every worker at once (they share the open file):
    # Twisted accepts until the queue is empty.
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """
    Listens on a socket the supervisor bound: adopted by the reactor, with
    the TLS of an ``ssl:`` endpoint's description when it has one.
    """

    def __init__(self, reactor: Any, description: str, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._endpoint = endpoints.serverFromString(reactor, description)
        self._family = (socket.AF_INET6
                        if isinstance(self._endpoint, endpoints.TCP6ServerEndpoint)
                        else socket.AF_INET)

    def listen(self, factory: Any) -> Any:
        if isinstance(self._endpoint, endpoints.SSL4ServerEndpoint):
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self._endpoint._sslContextFactory, False, factory)
        os.set_blocking(self._fd, False)
        port = self._reactor.adoptStreamPort(self._fd, self._family, factory)
        # The reactor listens on its own duplicate of the descriptor.
        os.close(self._fd)
        return succeed(port)


def supervise(config: Any, argv: Sequence[str], json_logs: bool = False) -> int:
    """
    Bind the listeners, run ``config.workers`` workers on them until a
    signal stops the supervisor, and return the exit status.

    :param argv: the command line after the program name (``serve …``);
        each worker runs it with ``--workers 1`` added.
    """
    sockets: List[Tuple[str, socket.socket]] = []
    try:
        for flag, description in (("--listen", config.listen),
                                  ("--admin-listen", config.admin_listen),
                                  ("--http01-listen", config.http01_listen)):
            if description:
                try:
                    sockets.append((flag, bind(description)))
                except OSError as error:
                    print(f"acme-gateway: cannot start: {flag} {description}: cannot listen: "
                          f"{error}", file=sys.stderr, flush=True)
                    return 1
        inherited = ",".join(f"{flag}={sock.fileno()}" for flag, sock in sockets)
        command = [sys.executable, "-m", "gateway", *argv, "--workers", "1"]
        return _Supervisor(config.workers, command, inherited,
                           [sock.fileno() for _, sock in sockets]).run()
    finally:
        for _, sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """
    In a worker, before it runs: be sent SIGTERM when the supervisor dies,
    however it dies, so that no worker outlives it (Linux; elsewhere a
    no-op).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class _Supervisor:
    """
    Starts the workers, restarts the ones that die, and stops them all on
    a signal.
    """

    def __init__(self, count: int, command: List[str], inherited: str, fds: List[int]) -> None:
        self.count = count
        self.command = command
        self.env = {**os.environ, LISTENERS_VARIABLE: inherited}
        self.fds = fds
        self.workers: Dict[int, Tuple[subprocess.Popen, float]] = {}
        self.stopping: Optional[int] = None

    def _start(self, index: int) -> None:
        process = subprocess.Popen(self.command, env={**self.env,
                                                      "ACME_GATEWAY_WORKER_INDEX": str(index)},
                                   pass_fds=self.fds, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent)
        self.workers[index] = (process, time.monotonic())
        print(f"acme-gateway: worker {index} started (pid {process.pid})", file=sys.stderr,
              flush=True)

    def _signal(self, signum: int, frame: Any) -> None:
        if self.stopping is None:
            self.stopping = signum
            for process, _ in self.workers.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for index in range(self.count):
            self._start(index)
        print(f"acme-gateway: supervising {self.count} workers (pid {os.getpid()})",
              file=sys.stderr, flush=True)
        status = 0
        restarts: Dict[int, float] = {}
        while self.workers or (restarts and self.stopping is None):
            time.sleep(0.1)
            for index, (process, started) in list(self.workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del self.workers[index]
                if self.stopping is not None:
                    status = status or (code if code > 0 else 0)
                    continue
                if code > 0 and time.monotonic() - started < STARTUP_SECONDS:
                    print(f"acme-gateway: worker {index} could not start (exit status {code}); "
                          f"stopping", file=sys.stderr, flush=True)
                    status = code
                    self._signal(signal.SIGTERM, None)
                    continue
                print(f"acme-gateway: worker {index} (pid {process.pid}) exited with status "
                      f"{code}; starting it again", file=sys.stderr, flush=True)
                restarts[index] = time.monotonic() + RESTART_DELAY_SECONDS
            for index, when in list(restarts.items()):
                if self.stopping is not None:
                    del restarts[index]
                elif time.monotonic() >= when:
                    del restarts[index]
                    self._start(index)
        return status
