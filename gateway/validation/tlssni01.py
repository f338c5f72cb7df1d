"""
The tls-sni-01 check, as Boulder's VA made it (2017-2018), for legacy
clients that answer only tls-sni-01 (certbot's nginx plugin before 0.21,
its apache plugin of that time, appliances built on them).

No CA validates tls-sni-01 any more (Let's Encrypt turned it off in March
2019, and RFC 8555 never had it), so the gateway checks such a client's
answer itself, exactly as Boulder did, before it proves the name upstream
with its own means:

1. ``Z`` is the lowercase hex SHA-256 of the key authorization
   (``token.thumbprint``), and the name to ask for is
   ``<Z[0:32]>.<Z[32:64]>.acme.invalid`` (`z_name`).
2. The identifier's A and AAAA records are looked up (a failure of both is
   a ``dns`` problem, no address at all ``unknownHost``); the first IPv6
   address is tried first, then the first IPv4 address (Boulder's
   ``IPv6First``, on in production from 2018).
3. A TLS connection to that address's port 443 (``--tls-sni-check-port``)
   sends ``Z``'s name as SNI and verifies nothing: the certificate is
   self-signed.  Connecting and the handshake share one 10-second budget
   (Boulder's ``singleDialTimeout``).
4. The check holds when one of the first presented certificate's DNS
   subjectAltNames is exactly that name (byte for byte, as Go's
   ``ConstantTimeCompare`` did).  Other names may sit beside it: certbot
   puts ``dummy`` there too.

Failures are Boulder's v1 problems, with its words: ``tls`` for an alert
from the server, ``connection`` for refused, reset, timed-out and other
failed connections, ``malformed`` for a server that answers HTTP, and
``unauthorized`` for no or the wrong certificate ("Incorrect validation
certificate for tls-sni-01 challenge. Requested … from …").  Each check also
yields Boulder's validation record (hostname, port, addresses resolved,
used and tried), which a v1 challenge shows as ``validationRecord``.

`TLSSNI01Checker` is the I/O; `z_name`, `certificate_problem` and the flag
parsers are pure.  Lookups go to the system resolver (``getaddrinfo``, off
the reactor thread), or to one DNS server (``--tls-sni-check-resolver
HOST:PORT``) through Twisted's DNS client.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


CHALLENGE_TYPE = "tls-sni-01"
TLS_SNI_SUFFIX = "acme.invalid"

#: The port Boulder connected to; ``--tls-sni-check-port`` overrides it.
DEFAULT_CHECK_PORT = 443

#: Boulder's ``singleDialTimeout``: connecting and the TLS handshake together.
DIAL_TIMEOUT = 10.0

#: How long one DNS query may take, and the retries, against
#: ``--tls-sni-check-resolver`` (within Boulder's 10 s for a lookup).
DNS_QUERY_TIMEOUTS = (2, 3, 4)

#: What a server that speaks plain HTTP sends first ("HTTP/").
_HTTP_PREFIX = b"HTTP/"


def z_name(key_authorization: str) -> str:
    """
    The SNI name tls-sni-01 asks for: ``Z[0:32].Z[32:64].acme.invalid``,
    where ``Z`` is the lowercase hex SHA-256 of the key authorization.
    """
    z = hashlib.sha256(key_authorization.encode("utf-8")).hexdigest()
    return f"{z[:32]}.{z[32:]}.{TLS_SNI_SUFFIX}"


def parse_check_port(value: str) -> int:
    """
    ``--tls-sni-check-port PORT``: the port to connect to instead of 443.

    :raises ValueError: not a port number (1-65535).
    """
    try:
        port = int(str(value).strip(), 10)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return port


def parse_check_resolver(value: str) -> Tuple[str, int]:
    """
    ``--tls-sni-check-resolver HOST:PORT``: the DNS server to look names up
    with, as ``(ip, port)``.  HOST is an IP address (``[v6]:PORT`` for IPv6):
    a server's own name would need a resolver to find.

    :raises ValueError: not ``IP:PORT``.
    """
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:53 or [::1]:53)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address (give the DNS server's address, "
                         f"e.g. 127.0.0.1:53)") from None
    return str(address), parse_check_port(port)


@attrs.frozen
class VAProblem:
    """
    Why a check failed, as Boulder's VA said it (2017-2018): an ACME error
    code of the ``urn:acme:error:`` namespace v1 clients read, its detail
    (Boulder's words) and the HTTP status Boulder gave it.
    """

    code: str
    detail: str
    status: int = 400

    @property
    def type(self) -> str:
        return "urn:acme:error:" + self.code

    def to_json(self) -> Dict[str, Any]:
        return {"type": self.type, "detail": self.detail, "status": self.status}

    @classmethod
    def unauthorized(cls, detail: str) -> "VAProblem":
        return cls("unauthorized", detail, 403)

    @classmethod
    def connection(cls, detail: str) -> "VAProblem":
        return cls("connection", detail)

    @classmethod
    def malformed(cls, detail: str) -> "VAProblem":
        return cls("malformed", detail)

    @classmethod
    def tls(cls, detail: str) -> "VAProblem":
        return cls("tls", detail)

    @classmethod
    def unknown_host(cls, detail: str) -> "VAProblem":
        return cls("unknownHost", detail)

    @classmethod
    def dns(cls, detail: str) -> "VAProblem":
        return cls("dns", detail)


@attrs.frozen
class ValidationRecord:
    """
    What Boulder recorded about one tls-sni-01 check (its
    ``core.ValidationRecord``): the name, the port, every address the name
    resolved to, the one used, and those tried before it.
    """

    hostname: str
    port: int
    addresses_resolved: Tuple[str, ...] = ()
    address_used: Optional[str] = None
    addresses_tried: Tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The v1 JSON form (``validationRecord`` entries of a challenge)."""
        document = {"hostname": self.hostname, "port": str(self.port),
                    "addressesResolved": list(self.addresses_resolved)}
        if self.address_used is not None:
            document["addressUsed"] = self.address_used
        if self.addresses_tried:
            document["addressesTried"] = list(self.addresses_tried)
        return document


@attrs.frozen
class TLSSNI01Result:
    """
    The outcome of one check: valid when ``problem`` is ``None``.

    :ivar z_name: the SNI name that was asked for.
    :ivar record: Boulder's validation record.
    :ivar problem: why the check failed, as the v1 problem Boulder put in
        the challenge's ``error``.
    """

    z_name: str
    record: ValidationRecord
    problem: Optional[VAProblem] = None

    @property
    def valid(self) -> bool:
        return self.problem is None


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _certificate_names(certificate: x509.Certificate) -> List[str]:
    """Boulder's ``certNames``: CN and DNS SANs, lower-cased, unique, sorted."""
    names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
             if isinstance(a.value, str) and a.value][:1]
    names += _dns_names(certificate)
    return sorted({n.lower() for n in names})


def _dns_names(certificate: x509.Certificate) -> List[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def certificate_problem(presented: Sequence[bytes], wanted: str, host_port: str) -> Optional[VAProblem]:
    """
    Whether the certificates a server presented (DER, leaf first) answer
    tls-sni-01 for ``wanted`` (the `z_name`): ``None`` when the leaf's DNS
    subjectAltNames include it exactly, else Boulder's ``unauthorized``.
    """
    if not presented:
        return VAProblem.unauthorized(f"No certs presented for {CHALLENGE_TYPE} challenge")
    try:
        leaf = x509.load_der_x509_certificate(presented[0])
        names = _dns_names(leaf)
    except ValueError:
        # Go's TLS client fails the handshake on a certificate it cannot
        # parse, which Boulder reported as a failed connection.
        return VAProblem.connection("Error getting validation data")
    wanted_bytes = wanted.encode("utf-8")
    if any(hmac.compare_digest(name.encode("utf-8"), wanted_bytes) for name in names):
        return None
    shown = json.dumps(", ".join(_certificate_names(leaf)), ensure_ascii=False)
    return VAProblem.unauthorized(
        f"Incorrect validation certificate for {CHALLENGE_TYPE} challenge. Requested {wanted} "
        f"from {host_port}. Received {len(presented)} certificate(s), first certificate had "
        f"names {shown}")


# --------------------------------------------------------------------------
# I/O: the TLS connection
# --------------------------------------------------------------------------

@implementer(IOpenSSLClientConnectionCreator)
class _SNIWithoutVerification:
    """
    Client TLS connections that send ``server_name`` as SNI and accept any
    certificate (``InsecureSkipVerify``): the challenge certificate is
    self-signed for a name under ``.acme.invalid``.
    """

    def __init__(self, server_name: str):
        self._server_name = server_name.encode("ascii")
        self._context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self._context.set_verify(SSL.VERIFY_NONE, lambda *args: True)

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        connection.set_tlsext_host_name(self._server_name)
        connection.set_connect_state()
        return connection


class _PeekingTLSProtocol(TLSMemoryBIOProtocol):
    """
    TLS over TCP that keeps the first bytes the server sent, to tell a
    plain HTTP server from a broken TLS one (Boulder's ``badTLSHeader``),
    and why the TCP connection ended (the TLS layer reports a reset and a
    clean close before the handshake alike).
    """

    first_bytes = b""
    tcp_reason = None

    def dataReceived(self, data):
        if len(self.first_bytes) < len(_HTTP_PREFIX):
            self.first_bytes += data[: len(_HTTP_PREFIX) - len(self.first_bytes)]
        super().dataReceived(data)

    def connectionLost(self, reason):
        self.tcp_reason = reason
        super().connectionLost(reason)


class _PeekingTLSFactory(TLSMemoryBIOFactory):
    protocol = _PeekingTLSProtocol


@implementer(IHandshakeListener)
class _CertificateGrabber(Protocol):
    """Fires ``done`` with the presented chain (DER, leaf first) once the
    handshake completes, then drops the connection; errbacks with the
    reason when the connection ends before that."""

    def __init__(self):
        self.done: defer.Deferred = defer.Deferred()

    def handshakeCompleted(self):
        chain = self.transport.getHandle().get_peer_cert_chain() or []
        ders = [c.to_cryptography().public_bytes(serialization.Encoding.DER) for c in chain]
        self.transport.abortConnection()
        if not self.done.called:
            self.done.callback(ders)

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


class _Failed(Exception):
    def __init__(self, problem: VAProblem):
        super().__init__(problem.detail)
        self.problem = problem


def _alert_reason(ssl_error: SSL.Error) -> Optional[str]:
    """An alert the server sent (OpenSSL says ``… alert <description>``),
    worded as Go reported it: ``remote error: tls: <description>``."""
    for entry in ssl_error.args[0] if ssl_error.args and isinstance(ssl_error.args[0], list) else []:
        reason = str(entry[-1]) if isinstance(entry, tuple) and entry else ""
        if " alert " in reason:
            return "remote error: tls: " + reason.split(" alert ", 1)[1]
    return None


def _connect_problem(failure) -> VAProblem:
    if failure.check(error.ConnectionRefusedError):
        return VAProblem.connection("Connection refused")
    # (the only cancellation is the timeout's)
    if failure.check(error.TCPTimedOutError, error.TimeoutError, defer.TimeoutError, defer.CancelledError,
                     error.ConnectingCancelledError):
        return VAProblem.connection("Timeout during connect (likely firewall problem)")
    if failure.check(error.NoRouteError):
        return VAProblem.connection("Network unreachable")
    return VAProblem.connection("Error getting validation data")


def _handshake_problem(failure, tls_protocol: _PeekingTLSProtocol) -> VAProblem:
    if tls_protocol.first_bytes == _HTTP_PREFIX:
        return VAProblem.malformed("Server only speaks HTTP, not TLS")
    if failure.check(SSL.Error):
        alert = _alert_reason(failure.value)
        if alert:
            return VAProblem.tls(alert)
    if failure.check(defer.CancelledError, defer.TimeoutError):
        return VAProblem.connection("Timeout after connect (your server may be slow or overloaded)")
    tcp_reason = tls_protocol.tcp_reason
    if tcp_reason is not None and tcp_reason.check(error.ConnectionLost) \
            and not tcp_reason.check(error.ConnectionDone):
        return VAProblem.connection("Connection reset by peer")
    return VAProblem.connection("Error getting validation data")


# --------------------------------------------------------------------------
# I/O: resolving the name
# --------------------------------------------------------------------------

@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self):
        self.addresses: List[str] = []
        self.done: defer.Deferred = defer.Deferred()

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        if isinstance(address, (IPv4Address, IPv6Address)) and address.host not in self.addresses:
            self.addresses.append(address.host)

    def resolutionComplete(self):
        self.done.callback(self.addresses)


def _dns_detail(failure) -> str:
    """Boulder's words for a failed query (its ``bdns.DNSError``)."""
    from twisted.names import error as dns_error

    if failure.check(dns_error.DNSNameError):
        return "NXDOMAIN"
    if failure.check(dns_error.DNSServerError):
        return "SERVFAIL"
    if failure.check(dns_error.DNSQueryRefusedError):
        return "REFUSED"
    if failure.check(dns_error.DNSQueryTimeoutError, defer.TimeoutError, error.TimeoutError):
        return "query timed out"
    return "networking error"


class TLSSNI01Checker:
    """
    Checks a client's tls-sni-01 answer as Boulder did.

    :param reactor: provides TCP, time and (without ``resolver``) name resolution.
    :param port: the port to connect to (``--tls-sni-check-port``; 443).
    :param resolver: ``(ip, port)`` of the DNS server to look names up with
        (``--tls-sni-check-resolver``), or ``None`` for the system resolver.
    :param timeout: seconds for connecting and the handshake together.
    :param dns_timeouts: the timeout of each try of a query to ``resolver``.
    """

    def __init__(self, reactor, port: int = DEFAULT_CHECK_PORT,
                 resolver: Optional[Tuple[str, int]] = None, timeout: float = DIAL_TIMEOUT,
                 dns_timeouts: Sequence[float] = DNS_QUERY_TIMEOUTS):
        self._reactor = reactor
        self.port = port
        self.resolver_address = resolver
        self.timeout = timeout
        self.dns_timeouts = tuple(dns_timeouts)
        self._dns: Optional[Any] = None  # twisted.names.client.Resolver, made on first use

    async def check(self, name: str, key_authorization: str) -> TLSSNI01Result:
        """
        Check that ``name`` answers tls-sni-01 for ``key_authorization``.
        Never raises for what the network or the server does: every failure
        is the result's ``problem``.
        """
        wanted = z_name(key_authorization)
        record = ValidationRecord(hostname=name, port=self.port)
        try:
            addresses = await self._resolve(name)
        except _Failed as failed:
            return TLSSNI01Result(wanted, record, failed.problem)
        record = attrs.evolve(record, addresses_resolved=tuple(addresses))
        v4 = [a for a in addresses if ":" not in a]
        v6 = [a for a in addresses if ":" in a]
        tried: Tuple[str, ...] = ()
        if v6:
            problem = await self._check_address(v6[0], wanted)
            if problem is None:
                return TLSSNI01Result(wanted, attrs.evolve(record, address_used=v6[0]))
            tried = (v6[0],)
            if not v4:
                return TLSSNI01Result(wanted, attrs.evolve(record, address_used=v6[0], addresses_tried=tried),
                                      VAProblem.malformed(f"Unable to contact {json.dumps(name)} at "
                                                          f"{json.dumps(v6[0])}, no IPv4 addresses to try "
                                                          f"as fallback"))
        record = attrs.evolve(record, address_used=v4[0], addresses_tried=tried)
        return TLSSNI01Result(wanted, record, await self._check_address(v4[0], wanted))

    async def _check_address(self, address: str, wanted: str) -> Optional[VAProblem]:
        try:
            presented = await self._presented_certificates(address, wanted)
        except _Failed as failed:
            return failed.problem
        return certificate_problem(presented, wanted, _host_port(address, self.port))

    async def _presented_certificates(self, address: str, server_name: str) -> List[bytes]:
        reactor = self._reactor
        deadline = reactor.seconds() + self.timeout
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = endpoint_type(reactor, address, self.port, timeout=max(1, int(self.timeout + 0.999)))
        grabber = _CertificateGrabber()
        factory = _PeekingTLSFactory(_SNIWithoutVerification(server_name), True,
                                     Factory.forProtocol(lambda: grabber))
        connecting = endpoint.connect(factory)
        connecting.addTimeout(self.timeout, reactor)
        try:
            tls_protocol = await connecting
        except Exception:
            raise _Failed(_connect_problem(_failure()))
        handshake = grabber.done
        remaining = max(0.0, deadline - reactor.seconds())
        handshake.addTimeout(remaining, reactor,
                             onTimeoutCancel=lambda result, timeout: _abort(tls_protocol, result))
        try:
            return await handshake
        except Exception:
            raise _Failed(_handshake_problem(_failure(), cast(_PeekingTLSProtocol, tls_protocol)))

    async def _resolve(self, name: str) -> List[str]:
        if self.resolver_address is None:
            return await self._resolve_with_system(name)
        return await self._resolve_with_server(name)

    async def _resolve_with_system(self, name: str) -> List[str]:
        receiver = _Addresses()
        self._reactor.nameResolver.resolveHostName(
            receiver, name, 0, addressTypes=[IPv4Address, IPv6Address], transportSemantics="TCP")
        addresses = await receiver.done
        if not addresses:
            raise _Failed(VAProblem.unknown_host(f"No valid IP addresses found for {name}"))
        return addresses

    async def _resolve_with_server(self, name: str) -> List[str]:
        from twisted.names import client, dns

        if self._dns is None:
            self._dns = client.Resolver(servers=[self.resolver_address], reactor=self._reactor)
        queries = [self._dns.lookupAddress(name, timeout=self.dns_timeouts),
                   self._dns.lookupIPV6Address(name, timeout=self.dns_timeouts)]
        results = await defer.DeferredList(queries, consumeErrors=True)
        (a_ok, a_result), (aaaa_ok, aaaa_result) = results
        if not a_ok and not aaaa_ok:
            raise _Failed(VAProblem.dns(f"DNS problem: {_dns_detail(a_result)} looking up A for {name}"))
        addresses: List[str] = []
        for ok, result, wanted_type in ((a_ok, a_result, dns.A), (aaaa_ok, aaaa_result, dns.AAAA)):
            if not ok:
                continue
            for answer in result[0]:
                if answer.type != wanted_type:
                    continue
                if wanted_type == dns.A:
                    address = answer.payload.dottedQuad()
                else:
                    address = socket.inet_ntop(socket.AF_INET6, answer.payload.address)
                if address not in addresses:
                    addresses.append(address)
        if not addresses:
            raise _Failed(VAProblem.unknown_host(f"No valid IP addresses found for {name}"))
        return addresses


def _abort(tls_protocol, result):
    """On the handshake's timeout: drop the connection, and let the
    cancellation stand as the result."""
    transport = getattr(tls_protocol, "transport", None)
    if transport is not None:
        transport.abortConnection()
    return result


def _failure():
    from twisted.python.failure import Failure

    return Failure()


__all__ = ["TLSSNI01Checker", "TLSSNI01Result", "ValidationRecord", "z_name", "certificate_problem",
           "parse_check_port", "parse_check_resolver", "DEFAULT_CHECK_PORT", "DIAL_TIMEOUT"]
