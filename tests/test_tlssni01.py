"""
The tls-sni-01 check (`gateway.validation.tlssni01`) against real loopback
servers: a TLS server that picks its certificate by SNI (as nginx does for
certbot's challenge block), servers that fail in each way Boulder told
apart, and a loopback DNS server for ``--tls-sni-check-resolver``.
"""

import datetime
import os
import socket
import struct

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, protocol, ssl
from twisted.names import common, dns, error as dns_error

from gateway.process.devstack import listen_dns
from gateway.validation.tlssni01 import (
    DEFAULT_CHECK_PORT,
    TLSSNI01Checker,
    ValidationRecord,
    certificate_problem,
    parse_check_port,
    parse_check_resolver,
    z_name,
)

KEY_AUTHORIZATION = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ"
OTHER_KEY_AUTHORIZATION = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.someone-elses-thumbprint"


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

def test_z_name_is_the_split_lowercase_sha256_of_the_key_authorization():
    # printf %s "$KEY_AUTHORIZATION" | sha256sum
    assert z_name(KEY_AUTHORIZATION) == (
        "346c0aa17060093f098446b46caec0c1.f4aa1f2bbf6567ae815d3b7cb18856ad.acme.invalid")
    assert z_name(OTHER_KEY_AUTHORIZATION) != z_name(KEY_AUTHORIZATION)


@pytest.mark.parametrize("value, port", [("443", 443), ("1", 1), (" 8443 ", 8443), ("65535", 65535)])
def test_check_port_takes_port_numbers(value, port):
    assert parse_check_port(value) == port


@pytest.mark.parametrize("value", ["0", "65536", "-1", "https", "", "4.3"])
def test_check_port_refuses_what_is_no_port(value):
    with pytest.raises(ValueError, match="port number"):
        parse_check_port(value)


@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1:53", ("127.0.0.1", 53)),
    ("127.0.0.53:5353", ("127.0.0.53", 5353)),
    ("[::1]:53", ("::1", 53)),
])
def test_check_resolver_takes_ip_and_port(value, parsed):
    assert parse_check_resolver(value) == parsed


@pytest.mark.parametrize("value, message", [
    ("127.0.0.1", "HOST:PORT"),
    (":53", "HOST:PORT"),
    ("dns.example.test:53", "not an IP address"),
    ("127.0.0.1:dns", "port number"),
    ("127.0.0.1:0", "port number"),
])
def test_check_resolver_refuses_anything_else(value, message):
    with pytest.raises(ValueError, match=message):
        parse_check_resolver(value)


def test_validation_record_has_boulders_v1_shape():
    record = ValidationRecord("a.example.test", 443, ("::1", "127.0.0.1"), "127.0.0.1", ("::1",))
    assert record.to_json() == {"hostname": "a.example.test", "port": "443",
                                "addressesResolved": ["::1", "127.0.0.1"], "addressUsed": "127.0.0.1",
                                "addressesTried": ["::1"]}
    assert ValidationRecord("b.example.test", 5001).to_json() == {
        "hostname": "b.example.test", "port": "5001", "addressesResolved": []}


def test_no_certificate_at_all_is_unauthorized():
    problem = certificate_problem([], z_name(KEY_AUTHORIZATION), "127.0.0.1:443")
    assert (problem.type, problem.detail) == (
        "urn:acme:error:unauthorized", "No certs presented for tls-sni-01 challenge")


def test_default_port_is_443():
    assert DEFAULT_CHECK_PORT == 443
    from twisted.internet import reactor

    assert TLSSNI01Checker(reactor).port == 443


# --------------------------------------------------------------------------
# Certificates and servers
# --------------------------------------------------------------------------

def make_certificate(directory, stem: str, common_name: str, san=None):
    """A self-signed certificate and its key, as PEM files; ``(cert_path, key_path, der)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = os.path.join(directory, stem + ".crt"), os.path.join(directory, stem + ".key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def _context(cert_path, key_path, **options):
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_file(cert_path)
    context.use_privatekey_file(key_path)
    if options.get("tls12_client_cert_required"):
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: True)
    return context


class SNIContextFactory(ssl.ContextFactory):
    """
    A server context that presents ``default`` unless the client's SNI
    names one of ``by_name``'s keys -- how nginx picks certbot's challenge
    server block.  ``seen`` records every SNI name asked for.
    """

    def __init__(self, default, by_name=None, **options):
        self.seen = []
        self._contexts = {name: _context(*paths) for name, paths in (by_name or {}).items()}
        self._default = _context(*default, **options)
        self._default.set_tlsext_servername_callback(self._pick)

    def _pick(self, connection):
        name = connection.get_servername()
        self.seen.append(name.decode("ascii") if name else None)
        if name and name.decode("ascii") in self._contexts:
            connection.set_context(self._contexts[name.decode("ascii")])

    def getContext(self):
        return self._default


class Silent(protocol.Protocol):
    """Accepts and says nothing (a server that never answers the handshake)."""


class Resetting(protocol.Protocol):
    def connectionMade(self):
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()


class SpeaksHTTP(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.loseConnection()


@pytest.fixture
def listening():
    """Listen on 127.0.0.1 (ephemeral ports); everything stops after the test."""
    from twisted.internet import reactor

    ports = []

    def listen(factory, context_factory=None):
        if context_factory is not None:
            port = reactor.listenSSL(0, factory, context_factory, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen
    return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def _site_factory():
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    factory.noisy = False
    return factory


class Zone(common.ResolverBase):
    """Answers from a table: ``name -> (A list, AAAA list)``; other names NXDOMAIN."""

    def __init__(self, table):
        common.ResolverBase.__init__(self)
        self.table = table

    def _lookup(self, name, cls, type, timeout):
        key = name.decode() if isinstance(name, bytes) else name
        key = key.rstrip(".").lower()
        if key not in self.table:
            return defer.fail(dns_error.DomainError(name))
        v4, v6 = self.table[key]
        answers = []
        if type == dns.A:
            answers = [dns.RRHeader(name, dns.A, dns.IN, 0, dns.Record_A(a, ttl=0), auth=True) for a in v4]
        elif type == dns.AAAA:
            answers = [dns.RRHeader(name, dns.AAAA, dns.IN, 0, dns.Record_AAAA(a, ttl=0), auth=True)
                       for a in v6]
        return defer.succeed((answers, [], []))


@pytest.fixture
def dns_zone():
    """A loopback DNS server for ``--tls-sni-check-resolver``: ``(address, zone)``."""
    from twisted.internet import reactor

    zone = Zone({})
    udp, tcp = listen_dns(reactor, zone, 0, "127.0.0.1")
    yield ("127.0.0.1", udp.getHost().port), zone
    return defer.gatherResults([defer.maybeDeferred(udp.stopListening), defer.maybeDeferred(tcp.stopListening)])


def _checker(port, resolver=None, timeout=10.0):
    from twisted.internet import reactor

    return TLSSNI01Checker(reactor, port=port, resolver=resolver, timeout=timeout)


def _challenge_server(tmp_path, listening, key_authorization=KEY_AUTHORIZATION, san_extra=("dummy",)):
    """What certbot's nginx plugin sets up: a site certificate by default and,
    for the challenge's SNI name only, a self-signed certificate whose SANs
    are ``dummy`` and that name."""
    wanted = z_name(key_authorization)
    site = make_certificate(str(tmp_path), "site", "a.example.test", ["a.example.test"])
    challenge = make_certificate(str(tmp_path), "challenge", "dummy", [*san_extra, wanted])
    contexts = SNIContextFactory(site[:2], {wanted: challenge[:2]})
    return listening(_site_factory(), contexts), contexts


# --------------------------------------------------------------------------
# The check against real servers
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_the_right_certificate_for_the_sni_name_passes(tmp_path, listening, dns_zone):
    port, contexts = _challenge_server(tmp_path, listening)
    resolver, zone = dns_zone
    zone.table["a.example.test"] = (["127.0.0.1"], [])

    result = await _checker(port, resolver).check("a.example.test", KEY_AUTHORIZATION)

    assert result.valid, result.problem
    assert contexts.seen == [z_name(KEY_AUTHORIZATION)]   # the SNI it sent
    assert result.z_name == z_name(KEY_AUTHORIZATION)
    assert result.record == ValidationRecord("a.example.test", port, ("127.0.0.1",), "127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_key_authorization_is_unauthorized(tmp_path, listening, dns_zone):
    port, contexts = _challenge_server(tmp_path, listening, key_authorization=OTHER_KEY_AUTHORIZATION)
    resolver, zone = dns_zone
    zone.table["a.example.test"] = (["127.0.0.1"], [])

    result = await _checker(port, resolver).check("a.example.test", KEY_AUTHORIZATION)

    wanted = z_name(KEY_AUTHORIZATION)
    assert result.problem.type == "urn:acme:error:unauthorized"
    assert result.problem.detail == (
        f"Incorrect validation certificate for tls-sni-01 challenge. Requested {wanted} from "
        f"127.0.0.1:{port}. Received 1 certificate(s), first certificate had names "
        f'"a.example.test"')
    assert contexts.seen == [wanted]


@pytest_twisted.ensureDeferred
async def test_the_wrong_san_is_unauthorized_and_named(tmp_path, listening):
    other = z_name(OTHER_KEY_AUTHORIZATION)
    served = make_certificate(str(tmp_path), "wrong", "dummy", ["dummy", other])
    port = listening(_site_factory(), SNIContextFactory(served[:2]))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert result.problem.type == "urn:acme:error:unauthorized"
    assert result.problem.detail.endswith(
        f'Received 1 certificate(s), first certificate had names "{", ".join(sorted([other, "dummy"]))}"')


@pytest_twisted.ensureDeferred
async def test_a_certificate_without_subject_alt_names_is_unauthorized(tmp_path, listening):
    # (The challenge name, 78 characters, cannot even be a Common Name:
    # X.509 caps CNs at 64, which is why certbot's CN is "dummy".)
    served = make_certificate(str(tmp_path), "no-san", "A.Example.Test", san=None)
    port = listening(_site_factory(), SNIContextFactory(served[:2]))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert result.problem.type == "urn:acme:error:unauthorized"
    assert result.problem.detail.endswith('first certificate had names "a.example.test"')


@pytest_twisted.ensureDeferred
async def test_the_san_must_match_exactly(tmp_path, listening):
    wanted = z_name(KEY_AUTHORIZATION)
    served = make_certificate(str(tmp_path), "upper", "dummy", [wanted.upper(), "x." + wanted])
    port = listening(_site_factory(), SNIContextFactory(served[:2]))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert result.problem.type == "urn:acme:error:unauthorized"


@pytest_twisted.ensureDeferred
async def test_the_system_resolver_finds_localhost(tmp_path, listening):
    port, _ = _challenge_server(tmp_path, listening)

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert result.valid, result.problem
    assert result.record.address_used == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_a_silent_server_times_out_after_connect(listening):
    port = listening(protocol.Factory.forProtocol(Silent))

    result = await _checker(port, timeout=0.5).check("localhost", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:connection", "Timeout after connect (your server may be slow or overloaded)")
    assert result.record.address_used == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_connection_refused():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == ("urn:acme:error:connection", "Connection refused")


@pytest_twisted.ensureDeferred
async def test_a_reset_is_reported_as_such(listening):
    port = listening(protocol.Factory.forProtocol(Resetting))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:connection", "Connection reset by peer")


@pytest_twisted.ensureDeferred
async def test_a_plain_http_server_is_malformed(listening):
    port = listening(protocol.Factory.forProtocol(SpeaksHTTP))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:malformed", "Server only speaks HTTP, not TLS")


@pytest_twisted.ensureDeferred
async def test_an_alert_from_the_server_is_a_tls_problem(tmp_path, listening):
    served = make_certificate(str(tmp_path), "site", "a.example.test", ["a.example.test"])
    port = listening(_site_factory(), SNIContextFactory(served[:2], tls12_client_cert_required=True))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert result.problem.type == "urn:acme:error:tls"
    assert result.problem.detail.startswith("remote error: tls: ")


@pytest_twisted.ensureDeferred
async def test_nxdomain_is_a_dns_problem(dns_zone):
    resolver, _ = dns_zone

    result = await _checker(443, resolver).check("missing.example.test", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:dns", "DNS problem: NXDOMAIN looking up A for missing.example.test")
    assert result.record == ValidationRecord("missing.example.test", 443)


@pytest_twisted.ensureDeferred
async def test_a_name_without_addresses_is_an_unknown_host(dns_zone):
    resolver, zone = dns_zone
    zone.table["empty.example.test"] = ([], [])

    result = await _checker(443, resolver).check("empty.example.test", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:unknownHost", "No valid IP addresses found for empty.example.test")


@pytest_twisted.ensureDeferred
async def test_ipv6_is_tried_first_then_ipv4(tmp_path, listening, dns_zone):
    port, _ = _challenge_server(tmp_path, listening)     # on 127.0.0.1 only
    resolver, zone = dns_zone
    zone.table["dual.example.test"] = (["127.0.0.1"], ["::1"])

    result = await _checker(port, resolver).check("dual.example.test", KEY_AUTHORIZATION)

    assert result.valid, result.problem
    assert result.record == ValidationRecord("dual.example.test", port, ("127.0.0.1", "::1"),
                                             "127.0.0.1", ("::1",))


@pytest_twisted.ensureDeferred
async def test_ipv6_alone_that_fails_has_no_fallback(tmp_path, listening, dns_zone):
    port, _ = _challenge_server(tmp_path, listening)     # on 127.0.0.1 only
    resolver, zone = dns_zone
    zone.table["v6only.example.test"] = ([], ["::1"])

    result = await _checker(port, resolver).check("v6only.example.test", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:malformed",
        'Unable to contact "v6only.example.test" at "::1", no IPv4 addresses to try as fallback')
    assert result.record.addresses_tried == ("::1",)


def test_the_problem_is_a_v1_challenge_error_document():
    problem = certificate_problem([b"not a certificate"], z_name(KEY_AUTHORIZATION), "127.0.0.1:443")
    assert problem.to_json()["type"] == "urn:acme:error:connection"


class ClosesAtOnce(protocol.Protocol):
    def connectionMade(self):
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_server_that_hangs_up_gives_no_validation_data(listening):
    port = listening(protocol.Factory.forProtocol(ClosesAtOnce))

    result = await _checker(port).check("localhost", KEY_AUTHORIZATION)

    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:connection", "Error getting validation data")


class _OneAddress:
    """An IHostnameResolver that resolves every name to 127.0.0.1 at once."""

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        from twisted.internet.address import IPv4Address

        receiver.resolutionBegan(None)
        receiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        receiver.resolutionComplete()


def test_a_connection_that_never_completes_times_out_during_connect():
    # No loopback server can drop a SYN on demand: a reactor that never connects can.
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    reactor.nameResolver = _OneAddress()
    checking = defer.ensureDeferred(
        TLSSNI01Checker(reactor, port=443, timeout=10).check("a.example.test", KEY_AUTHORIZATION))
    assert [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 443)]
    reactor.advance(9.9)
    assert not checking.called
    reactor.advance(0.2)
    result = checking.result
    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:connection", "Timeout during connect (likely firewall problem)")


@pytest_twisted.ensureDeferred
async def test_a_resolver_that_never_answers_is_a_dns_timeout():
    from twisted.internet import reactor

    silent = reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
    try:
        checker = TLSSNI01Checker(reactor, port=443, resolver=("127.0.0.1", silent.getHost().port),
                                  dns_timeouts=(0.2, 0.2))
        result = await checker.check("a.example.test", KEY_AUTHORIZATION)
    finally:
        await silent.stopListening()
    assert (result.problem.type, result.problem.detail) == (
        "urn:acme:error:dns", "DNS problem: query timed out looking up A for a.example.test")
