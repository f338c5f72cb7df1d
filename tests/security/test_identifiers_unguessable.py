"""
Unguessable identifiers: every v1 URL id that can be read without a
signature (authorization, challenge, certificate) carries 128 bits from
`secrets`, so holding one URL says nothing about any other; ids next to a
real one (in spelling or in value) do not resolve.

Registration ids stay small integers, as dehydrated and certbot expect;
every request to ``/acme/reg/<id>`` is signed and checked against the
signer, so guessing one gains nothing.  Issuer ids are a hash of the public
issuer certificate: they guard nothing secret.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
import pytest_twisted

from gateway.keys.jose import b64url
from gateway.store.sql import ID_BYTES
from gateway.store.sqlite import SQLiteStore
from tests.security.harness import KEY, OTHER, Harness, assert_v1_problem, make_csr

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def decode(identifier: str) -> bytes:
    return base64.urlsafe_b64decode(identifier + "=" * (-len(identifier) % 4))


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def neighbours(identifier: str) -> set:
    """
    Ids a guesser would try next to ``identifier``: one character up or
    down at either end, the value plus or minus one, a changed case,
    truncated, extended.
    """
    found = set()
    for position in (0, len(identifier) - 1):
        index = ALPHABET.index(identifier[position])
        for step in (-1, 1):
            replaced = ALPHABET[(index + step) % len(ALPHABET)]
            found.add(identifier[:position] + replaced + identifier[position + 1:])
    raw = decode(identifier)
    value = int.from_bytes(raw, "big")
    for step in (-1, 1):
        found.add(encode(((value + step) % (1 << (8 * len(raw)))).to_bytes(len(raw), "big")))
    found.add(identifier.swapcase())
    found.add(identifier[:-1])
    found.add(identifier + "A")
    found.discard(identifier)
    return found


@pytest.fixture(scope="module")
def issued():
    """
    A gateway after a whole flow: A's authorization (valid), its challenges,
    and its certificate; plus B's authorization.
    """
    harness = Harness.fresh()
    harness.register(KEY)
    harness.register(OTHER)
    authorized = harness.authorize("a.example.test", KEY)
    certificate = harness.post("/acme/new-cert", {"resource": "new-cert",
                                                  "csr": b64url(make_csr(["a.example.test"]))})
    assert certificate.status == 201, certificate.body
    b_authz = harness.new_authz("b.example.test", OTHER)
    harness.state = {
        "authz_url": authorized["authz_url"],
        "challenge_urls": [c["uri"] for c in authorized["authz"]["challenges"]],
        "cert_url": certificate.header("location"),
        "issuer_url": certificate.links("up")[0],
        "b_authz_url": b_authz.header("location"),
    }
    return harness


def ids_of(issued) -> list:
    state = issued.state
    ids = [state["authz_url"].rsplit("/", 1)[1], state["cert_url"].rsplit("/", 1)[1],
           state["b_authz_url"].rsplit("/", 1)[1]]
    ids += [url.rsplit("/", 1)[1] for url in state["challenge_urls"]]
    return ids


def test_url_ids_carry_128_random_bits(issued):
    """
    Authorization, challenge and certificate ids are 22 base64url
    characters of 16 random bytes, all distinct, and share nothing with the
    upstream CA's ids.
    """
    ids = ids_of(issued)
    assert len(set(ids)) == len(ids)
    upstream = {a.id for a in issued.gateway.ca.authorizations.values()}
    upstream |= {c.id for c in issued.gateway.ca.certificates}
    for identifier in ids:
        assert len(identifier) == 22 and set(identifier) <= set(ALPHABET), identifier
        assert len(decode(identifier)) == ID_BYTES >= 16
        assert not any(u in identifier or identifier in u for u in upstream)


def _bit_balance(ids: list) -> None:
    """
    Every one of the 128 bits is set in roughly half of the ids: sequential
    or structured ids would leave most bits constant.
    """
    values = [int.from_bytes(decode(i), "big") for i in ids]
    for bit in range(8 * ID_BYTES):
        ones = sum((v >> bit) & 1 for v in values)
        assert 0.35 * len(values) < ones < 0.65 * len(values), bit


@pytest_twisted.ensureDeferred
async def test_store_ids_random():
    """
    `SQLStore.new_id` (on SQLite, in its own thread, as in production):
    distinct 128-bit values with balanced bits.
    """
    store = await SQLiteStore.open(":memory:")
    try:
        ids = [store.new_id() for _ in range(2000)]
    finally:
        await store.close()
    assert len(set(ids)) == len(ids)
    assert all(len(decode(i)) == 16 for i in ids)
    _bit_balance(ids)


def test_neighbouring_authorization_ids_do_not_resolve(issued):
    """
    Every neighbour of a real authorization id is a 404 to an unsigned read,
    and to a signed POST by the account owning the real one.
    """
    real = issued.state["authz_url"].rsplit("/", 1)[1]
    assert issued.get(f"/acme/authz/{real}").status == 200
    for guess in neighbours(real):
        assert_v1_problem(issued.get(f"/acme/authz/{guess}"), 404, "malformed", "authorization")
        reply = issued.post(f"/acme/authz/{guess}", {"resource": "authz", "status": "deactivated"}, key=KEY)
        assert_v1_problem(reply, 404, "malformed", "Unable to find authorization")


def test_neighbouring_challenge_ids_do_not_resolve(issued):
    """
    A neighbour of a real challenge id under the real authorization, and the
    real challenge id under a neighbour of its authorization, are 404s.
    """
    for url in issued.state["challenge_urls"]:
        authz_id, challenge_id = url.rsplit("/", 2)[1:]
        assert issued.get(f"/acme/challenge/{authz_id}/{challenge_id}").status == 202
        for guess in neighbours(challenge_id):
            assert_v1_problem(issued.get(f"/acme/challenge/{authz_id}/{guess}"), 404, "malformed",
                              "No such challenge")
        for guess in neighbours(authz_id):
            assert_v1_problem(issued.get(f"/acme/challenge/{guess}/{challenge_id}"), 404, "malformed")


def test_neighbouring_certificate_ids_do_not_resolve(issued):
    """
    Every neighbour of a real certificate id is a 404.
    """
    real = issued.state["cert_url"].rsplit("/", 1)[1]
    assert issued.get(f"/acme/cert/{real}").status == 200
    for guess in neighbours(real):
        assert_v1_problem(issued.get(f"/acme/cert/{guess}"), 404, "malformed", "Certificate not found")


def test_issuer_ids_are_content_hashes(issued):
    """
    Issuer ids name public CA certificates by their SHA-256 (nothing to
    guard); their neighbours do not resolve either.
    """
    issuer_id = issued.state["issuer_url"].rsplit("/", 1)[1]
    reply = issued.get(f"/acme/issuer-cert/{issuer_id}")
    assert reply.status == 200
    assert hashlib.sha256(reply.body).hexdigest().startswith(issuer_id)
    for guess in (issuer_id[:-1] + ("0" if issuer_id[-1] != "0" else "1"), issuer_id[:-1]):
        assert_v1_problem(issued.get(f"/acme/issuer-cert/{guess}"), 404, "malformed", "Issuer")


def test_registration_ids_need_the_signature(issued):
    """
    Registration ids are integers, but there is no unsigned read of one, and
    a signed request for another account's id is refused.
    """
    assert_v1_problem(issued.get("/acme/reg/1"), 405, "malformed")
    assert_v1_problem(issued.post("/acme/reg/1", {"resource": "reg"}, key=OTHER), 403, "unauthorized",
                      "Request signing key did not match registration key")
    assert_v1_problem(issued.post("/acme/reg/3", {"resource": "reg"}, key=KEY), 403, "unauthorized")
