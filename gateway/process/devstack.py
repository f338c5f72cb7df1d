"""
A local ACME v2 stack for demos and tests: Debian's Pebble as the upstream
CA, on loopback, with the pieces Pebble needs that its package lacks — a
TLS certificate for its listeners, and a DNS server that resolves every
name to 127.0.0.1 and serves the TXT records of dns-01 challenges.

Nothing here is used by ``acme-gateway serve`` in production; ``acme-gateway
demo`` and the test suite share it, so what the README demonstrates is what
the tests run.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from typing import Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import common, dns

PEBBLE_BINARY = shutil.which("pebble") or "/usr/bin/pebble"

#: Settings that make Pebble fast and deterministic: no random validation
#: sleeps, no random nonce rejection, no authorization reuse.
PEBBLE_QUIET_ENV = {
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
}


def make_tls_certificates(directory: str) -> Dict[str, str]:
    """
    A throw-away CA and a server certificate for ``localhost``, ``127.0.0.1``
    and ``::1``: Debian's pebble ships no TLS certificate, and Go ignores the
    CN, so the names must be SANs.  Existing files are kept.

    :return: paths ``ca``, ``cert``, ``key``, ``ca_key``.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key", "ca_key")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-gateway local TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def write(path, data, mode=0o644):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)

    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    write(paths["cert"], leaf.public_bytes(serialization.Encoding.PEM))
    write(paths["key"], key.private_bytes(serialization.Encoding.PEM, pkcs8, none), 0o600)
    write(paths["ca_key"], ca_key.private_bytes(serialization.Encoding.PEM, pkcs8, none), 0o600)
    return paths


def pebble_config(port: int, management_port: int, http_port: int, tls_port: int,
                  tls: Dict[str, str], extra: Optional[Dict[str, object]] = None) -> dict:
    """
    A Pebble configuration bound to 127.0.0.1 only (the packaged examples
    bind every interface).

    :param extra: more settings of today's Pebble (``profiles``,
        ``externalAccountBindingRequired`` with ``externalAccountMACKeys``),
        merged into the ``pebble`` object.
    """
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": tls["cert"],
            "privateKey": tls["key"],
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config["pebble"].update(extra or {})
    return config


def pebble_command(config_path: str, dns_address: str, binary: Optional[str] = None) -> List[str]:
    """
    Pebble's command line (Debian's ``pebble`` unless ``binary`` names
    another build; today's Pebble takes the same flags).  ``-strict=false``,
    never ``-strict false`` (Go would stop parsing flags there and ignore
    ``-config``); ``-dnsserver`` always, or Pebble would use the machine's
    resolver.
    """
    return [binary or PEBBLE_BINARY, "-config", config_path, "-strict=false",
            "-dnsserver", dns_address]


def _normalise(name) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower()


class LoopbackZone(common.ResolverBase):
    """
    Authoritative answers for every name: A 127.0.0.1 (so http-01 reaches a
    responder on loopback), no AAAA (Pebble would dial ``[::1]``), and TXT
    records from a table (appending: a base domain and its wildcard need two
    values on one name).
    """

    def __init__(self):
        common.ResolverBase.__init__(self)
        self.txt: Dict[str, List[str]] = {}

    def set_txt(self, name: str, value: str) -> None:
        values = self.txt.setdefault(_normalise(name), [])
        if value not in values:
            values.append(value)

    def clear_txt(self, name: str) -> None:
        self.txt.pop(_normalise(name), None)

    def _lookup(self, name, cls, type, timeout):
        key = _normalise(name)
        answers = []
        if type == dns.TXT:
            for value in self.txt.get(key, []):
                answers.append(
                    dns.RRHeader(name, dns.TXT, dns.IN, 0,
                                 dns.Record_TXT(value.encode("ascii"), ttl=0), auth=True))
        elif type == dns.A:
            answers.append(
                dns.RRHeader(name, dns.A, dns.IN, 0, dns.Record_A("127.0.0.1", ttl=0), auth=True))
        return defer.succeed((answers, [], []))


def listen_dns(reactor, zone: LoopbackZone, port: int = 0, interface: str = "127.0.0.1"):
    """
    Serve ``zone`` over UDP and TCP on loopback, on one port number.

    With ``port`` 0 the system picks a free UDP port, and the same number
    may be taken for TCP (an outgoing connection's local port, say): then
    the UDP port is let go and another one tried, up to
    `DNS_PORT_ATTEMPTS` times.  A port given is tried once.

    :return: ``(udp_port, tcp_port)`` listening ports.
    """
    from twisted.names import server

    if not (interface.startswith("127.") or interface == "::1"):
        raise ValueError("the development DNS server binds loopback only")
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    attempts_left = DNS_PORT_ATTEMPTS if port == 0 else 1
    while True:
        # A protocol per attempt: a UDP port let go detaches its protocol
        # only on a later turn of the reactor, and a datagram protocol
        # still attached refuses a second transport.
        protocol = dns.DNSDatagramProtocol(factory)
        protocol.noisy = False
        udp = reactor.listenUDP(port, protocol, interface=interface)
        try:
            return udp, reactor.listenTCP(udp.getHost().port, factory, interface=interface)
        except CannotListenError:
            udp.stopListening()
            attempts_left -= 1
            if not attempts_left:
                raise


#: How many free UDP ports `listen_dns` tries when the system picks them.
DNS_PORT_ATTEMPTS = 20
