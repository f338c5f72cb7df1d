"""
A synchronous in-memory gateway for the security tests, with what they need
on top of `gateway.process.testing.build_test_gateway`:

* requests through ``StubTreq`` (`Harness.request`, `Harness.post`) and as
  raw bytes through the production site (`Harness.raw`: `V1Site` over an
  ``HTTPChannel`` on a ``StringTransport``), for request lines and headers no
  HTTP client library would send;
* `Harness.snapshot`: every row of every table of the store (SQLite
  ``:memory:``) plus the upstream CA's request counts, to prove that a
  refused request wrote no row and made no upstream call;
* small flows (`Harness.register`, `Harness.authorize`, `Harness.issue`).

Everything answers at once: the upstream is a `FakeCA` behind ``StubTreq``,
so no reactor runs.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator, List, Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import InMemoryGateway, build_test_gateway
from gateway.v1.limits import V1Site
from gateway.v1.face import V1Face
from tests.support.v1_client import Reply, _reply
from tests.support.v1_signing import sign_v1

PROBLEM = "application/problem+json"

#: Account keys the gateway holds (A and B of the isolation tests are KEY
#: and OTHER), and one it does not.
KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
OTHER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
P384_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
RSA_KEY = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
STRANGER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
HELD_KEYS = (KEY, OTHER, P384_KEY, RSA_KEY)

NAME = "www.example.test"


def fired(deferred) -> Any:
    """
    The result of a Deferred that must already have fired.
    """
    results: list = []
    deferred.addBoth(results.append)
    assert results, "the gateway did not answer synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def make_csr(names, key=None, *, ip_addresses=()) -> bytes:
    """
    A DER CSR for ``names`` (CN = the first), signed by ``key`` (a fresh
    P-256 key by default), optionally with IP address SANs.
    """
    import ipaddress

    key = key or ec.generate_private_key(ec.SECP256R1())
    general_names = [x509.DNSName(n) for n in names]
    general_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def parse_raw_response(data: bytes) -> Reply:
    """
    One HTTP/1.1 response (``Content-Length`` or chunked) as a `Reply`.
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get("transfer-encoding") == ["chunked"]:
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    elif "content-length" in headers:
        body = rest[: int(headers["content-length"][0])]
    else:
        body = rest
    return Reply(status, headers, body)


@attrs.define
class RawExchange:
    """
    What a raw request got: the parsed reply (``None`` when nothing was
    written) and whether the server closed the connection.
    """

    reply: Optional[Reply]
    written: bytes
    closed: bool


@attrs.define
class Harness:
    """
    A fresh in-memory gateway holding `HELD_KEYS` over a fresh `FakeCA`.

    :ivar state: whatever a corpus case's setup returned.
    """

    gateway: InMemoryGateway
    state: Any = None

    @classmethod
    def fresh(cls, keys=HELD_KEYS, max_body: Optional[int] = None) -> "Harness":
        gateway = build_test_gateway(keys)
        if max_body is not None:
            gateway.face.max_body = max_body
        return cls(gateway)

    # -- requests -------------------------------------------------------------

    @property
    def base(self) -> str:
        return self.gateway.base_url

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def nonce(self) -> str:
        """
        A fresh gateway nonce (as a HEAD would hand out).
        """
        return self.gateway.nonces.issue()

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                headers: Optional[dict] = None) -> Reply:
        async def send():
            response = await self.gateway.client.request(
                method, self.url(path), data=body, headers=headers)
            return await _reply(response)

        from twisted.internet import defer

        return fired(defer.Deferred.fromCoroutine(send()))

    def post_body(self, path: str, body: bytes) -> Reply:
        return self.request("POST", path, body)

    def post(self, path: str, payload: Any, key: AccountKey = KEY, **options) -> Reply:
        """
        ``payload`` signed by ``key`` with a fresh nonce, POSTed to ``path``.
        """
        return self.post_body(path, sign_v1(key, payload, self.nonce(), **options))

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def raw(self, data: bytes, face: Optional[V1Face] = None) -> RawExchange:
        """
        Send ``data`` as it is over a fresh connection to the production site
        (`V1Site`, so the body limit applies while the body arrives).
        """
        site = V1Site(face or self.gateway.face, reactor=self.gateway.clock)
        site.log = lambda request: None
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 4000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        written = transport.value()
        reply = parse_raw_response(written) if written else None
        closed = transport.disconnecting
        if not closed:
            protocol.connectionLost(Failure(ConnectionError("test done")))
        return RawExchange(reply, written, closed)

    def face_deriving_urls_from_host(self) -> V1Face:
        """
        A second face on the same gateway with no base URL: links come from
        each request's ``Host`` (``--base-url`` unset).
        """
        gateway = self.gateway
        return V1Face(gateway.face.tree, gateway.nonces, gateway.clock, base_url=None,
                      max_body=gateway.face.max_body)

    # -- state ---------------------------------------------------------------

    def snapshot(self) -> dict:
        """
        Every row of every table of the store (SQLite's own
        ``sqlite_sequence``, which allocates account ids, included), in
        insertion order, and the CA's request counts.

        All but ``used_nonces``: a request whose signature checks out spends
        its nonce before anything else is looked at, refused or not (as
        Boulder did), so that it cannot be replayed; that row is the replay
        protection, not state the request changed (tests/test_nonces.py).
        """
        database = self.gateway.store._database
        names = [row[0] for row in database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if row[0] != "used_nonces"]
        tables = {name: [tuple(row) for row in database.execute(
            f"SELECT * FROM {name} ORDER BY rowid")] for name in names}
        assert "accounts" in tables and "certificates" in tables
        return {"store": tables, "upstream": +self.gateway.ca.counts}

    # -- flows ---------------------------------------------------------------

    def register(self, key: AccountKey = KEY) -> str:
        """
        new-reg for ``key``; the registration URL.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-reg",
                                            "contact": ["mailto:admin@example.test"]}, key=key)
        assert reply.status == 201, reply.body
        return reply.header("location")

    def new_authz(self, name: str = NAME, key: AccountKey = KEY) -> Reply:
        return self.post("/acme/new-authz", {"resource": "new-authz",
                                             "identifier": {"type": "dns", "value": name}}, key=key)

    def authorize(self, name: str = NAME, key: AccountKey = KEY) -> dict:
        """
        new-authz for ``name`` and answer its http-01 challenge; the
        authorization URL, its reply, and the challenge answered.
        """
        reply = self.new_authz(name, key)
        assert reply.status == 201, reply.body
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        answered = self.post(challenge["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": key.key_authorization(challenge["token"])}, key=key)
        assert answered.status == 202, answered.body
        return {"authz_url": reply.header("location"), "authz": reply.json(), "challenge": challenge}

    def issue(self, names=(NAME,), key: AccountKey = KEY) -> Reply:
        """
        Authorize every name and get the certificate; the new-cert reply.
        """
        for name in names:
            self.authorize(name, key)
        reply = self.post("/acme/new-cert", {"resource": "new-cert",
                                             "csr": b64url(make_csr(list(names)))}, key=key)
        assert reply.status == 201, reply.body
        return reply


def assert_v1_problem(reply: Reply, status: int, code: str, *fragments: str) -> dict:
    """
    ``reply`` is a v1 problem document: ``status`` (also in the body),
    ``application/problem+json``, ``urn:acme:error:<code>``, a detail with
    every fragment, and a ``Replay-Nonce``.
    """
    assert reply is not None, "no response was written"
    assert reply.status == status, (reply.status, reply.body)
    assert reply.header("content-type") == PROBLEM, reply.headers
    assert reply.header("replay-nonce"), "every response carries a Replay-Nonce"
    problem = json.loads(reply.body)
    assert problem["type"] == "urn:acme:error:" + code, problem
    assert problem["status"] == status
    for fragment in fragments:
        assert fragment in problem["detail"], (fragment, problem["detail"])
    return problem


@contextlib.contextmanager
def logged_failures() -> Iterator[List[dict]]:
    """
    Collect the log events that carry a failure (an unhandled exception the
    gateway caught and logged) while the block runs.
    """
    failures: List[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)
