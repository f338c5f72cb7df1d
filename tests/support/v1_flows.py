"""
Whole v1 flows for the fault and crash tests, on the suite's own v1 client
(`tests.support.v1_client`): what a legacy client does to get a
certificate, one request at a time, with the CSR key it made kept aside so
a test can check that the certificate it receives is for that key.

The gateway is expected to run with ``--http01-listen`` on the port Pebble
validates, so it answers each http-01 challenge with the client's key
authorization itself (as it does when port 80's challenge path is routed
to it): these flows never serve files.
"""

from __future__ import annotations

from typing import Optional, Sequence

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gateway.keys.jose import AccountKey, b64url
from tests.integration.test_upstream_pebble import make_csr
from tests.support.v1_client import Reply, V1TestClient


def spki(public_key) -> bytes:
    """
    The DER SubjectPublicKeyInfo of a public key.
    """
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


@attrs.frozen
class Issued:
    """
    The outcome of one ``new-cert``: the reply, and the public key of the
    CSR the client sent (DER SubjectPublicKeyInfo).
    """

    reply: Reply
    csr_key: bytes

    @property
    def ok(self) -> bool:
        return self.reply.status == 201

    def leaf_key(self) -> bytes:
        from cryptography import x509

        return spki(x509.load_der_x509_certificate(self.reply.body).public_key())


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def new_authz(client: V1TestClient, directory: dict, name: str,
                    polls: int = 100) -> Reply:
    """
    ``new-authz`` for ``name``, answer its http-01 challenge, and poll the
    authorization until it leaves ``pending``.

    :return: the last read of the authorization (or the failed reply).
    """
    reply = await client.post(directory["new-authz"], {
        "resource": "new-authz", "identifier": {"type": "dns", "value": name}})
    if reply.status != 201:
        return reply
    authz_url = reply.header("location")
    authz = reply.json()
    if authz["status"] == "valid":
        return reply
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    answered = await client.post(challenge["uri"], {
        "resource": "challenge", "type": "http-01",
        "keyAuthorization": client.key.key_authorization(challenge["token"])})
    if answered.status >= 400:
        return answered
    for _ in range(polls):
        current = await client.get(authz_url)
        if current.status != 200 or current.json()["status"] != "pending":
            return current
        await pause(0.05)
    return current


async def new_cert(client: V1TestClient, directory: dict, names: Sequence[str],
                   csr_key=None) -> Issued:
    """
    ``new-cert`` with a CSR for ``names`` under a fresh EC key (as certbot
    makes one on every run) or ``csr_key``.
    """
    csr, key = make_csr(list(names), key=csr_key)
    reply = await client.post(directory["new-cert"], {"resource": "new-cert", "csr": b64url(csr)})
    return Issued(reply, spki(key.public_key()))


async def obtain(base: str, key: AccountKey, names: Sequence[str], authorize: bool = True,
                 client: Optional[V1TestClient] = None) -> Issued:
    """
    The whole flow: ``new-authz`` for each name (unless ``authorize`` is
    false: a client relying on its old v1 authorizations), then
    ``new-cert``.  Raises when the gateway cannot be reached.
    """
    client = client or V1TestClient(base, key)
    directory = await client.directory()
    if authorize:
        for name in names:
            outcome = await new_authz(client, directory, name)
            if outcome.status >= 400 or outcome.json().get("status") != "valid":
                return Issued(outcome, b"")
    return await new_cert(client, directory, names)


def new_account_key() -> AccountKey:
    return AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
