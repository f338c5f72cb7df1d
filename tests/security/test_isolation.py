"""
Account isolation: account B, with a real key of its own that the gateway
holds, gets nothing of account A's -- each attempt refused with the v1 error
Boulder gave, and nothing changed upstream or in the store.

A (``KEY``) has registered, validated a name and got a certificate; B
(``OTHER``) has registered.  B knows every URL of A's (v1 authorization,
challenge and certificate URLs travel in logs and support tickets).
"""

from __future__ import annotations

import pytest
from cryptography import x509

from gateway.keys.jose import b64url
from tests.security.harness import KEY, NAME, OTHER, Harness, assert_v1_problem, make_csr

NOT_YOUR_CHALLENGE = "User registration ID doesn't match registration ID in authorization"
NOT_YOUR_AUTHORIZATION = "Registration ID doesn't match ID for authorization"
NOT_YOUR_REGISTRATION = "Request signing key did not match registration key"
NOT_YOUR_CERTIFICATE = "Revocation request must be signed by private key of cert to be revoked"


@pytest.fixture
def accounts():
    """
    A harness where A holds a valid authorization, a pending one (with its
    challenges) and a certificate, and B is registered.
    """
    harness = Harness.fresh()
    a_reg = harness.register(KEY)
    b_reg = harness.register(OTHER)
    certificate = harness.issue((NAME,), KEY)
    pending = harness.new_authz("pending.example.test", KEY)
    assert pending.status == 201
    harness.state = {
        "a_reg": a_reg,
        "b_reg": b_reg,
        "cert_url": certificate.header("location"),
        "cert_der": certificate.body,
        "pending_url": pending.header("location"),
        "pending_challenges": pending.json()["challenges"],
    }
    return harness


def attempt(harness: Harness, send, status: int, code: str, detail: str):
    """
    ``send()`` is refused with the v1 error, at no upstream request and
    without any change to what is stored.
    """
    before = harness.snapshot()
    reply = send()
    assert_v1_problem(reply, status, code, detail)
    assert harness.snapshot() == before, "B's refused request changed something"
    return reply


def test_snapshot_sees_a_write(accounts):
    """
    The snapshot that shows refused requests changed nothing does show a
    change: B's own new-authz adds an authorization, its challenges and an
    order, and calls the CA.
    """
    before = accounts.snapshot()
    assert accounts.new_authz("b.example.test", OTHER).status == 201
    after = accounts.snapshot()
    for table in ("authorizations", "challenges", "orders"):
        assert len(after["store"][table]) > len(before["store"][table]), table
    assert after["upstream"] != before["upstream"]


def test_b_cannot_answer_a_challenge(accounts):
    """
    B answering A's pending challenge, with B's own key authorization or
    A's, is Boulder's 403; the challenge stays pending upstream.
    """
    for challenge in accounts.state["pending_challenges"]:
        for key_authorization in (OTHER.key_authorization(challenge["token"]),
                                  challenge["keyAuthorization"]):
            attempt(accounts, lambda: accounts.post(challenge["uri"], {
                "resource": "challenge", "type": challenge["type"],
                "keyAuthorization": key_authorization}, key=OTHER),
                403, "unauthorized", NOT_YOUR_CHALLENGE)
    statuses = {c.status for a in accounts.gateway.ca.authorizations.values()
                if a.identifier == "pending.example.test" for c in a.challenges}
    assert statuses == {"pending"}


def test_b_cannot_deactivate_a_authorization(accounts):
    """
    B deactivating A's authorizations is Boulder's 403, whatever the payload
    (ownership is checked before the payload, so B learns nothing from it).
    """
    url = accounts.state["pending_url"]
    for payload in ({"resource": "authz", "status": "deactivated"}, {"resource": "authz"},
                    {"resource": "authz", "status": "valid"}):
        attempt(accounts, lambda: accounts.post(url, payload, key=OTHER),
                403, "unauthorized", NOT_YOUR_AUTHORIZATION)
    assert "deactivated" not in {a.status for a in accounts.gateway.ca.authorizations.values()}


def test_b_cannot_deactivate_a_valid_authorization(accounts):
    """
    The same for A's valid authorization (the one its certificate used).
    """
    a_id = int(accounts.state["a_reg"].rsplit("/", 1)[1])
    found = []
    accounts.gateway.store.find_authorizations(a_id, NAME, False).addCallback(found.extend)
    (valid,) = found
    assert valid.status == "valid"
    attempt(accounts, lambda: accounts.post(f"/acme/authz/{valid.id}",
                                            {"resource": "authz", "status": "deactivated"}, key=OTHER),
            403, "unauthorized", NOT_YOUR_AUTHORIZATION)


def test_b_cannot_read_or_update_a_registration(accounts):
    """
    B reading (an empty update), updating the contact of, agreeing for, or
    deactivating A's registration is Boulder's 403; A's account is unchanged
    in the store and upstream.
    """
    a_reg = accounts.state["a_reg"]
    # A's registration by its id, and by its key's thumbprint (the form
    # `acme-gateway adopt` writes into a migrated client's account).
    for url in (a_reg, accounts.url(f"/acme/reg/{KEY.thumbprint}")):
        for payload in ({"resource": "reg"},
                        {"resource": "reg", "contact": ["mailto:attacker@example.test"]},
                        {"resource": "reg", "agreement": accounts.url("/terms")},
                        {"resource": "reg", "status": "deactivated"}):
            attempt(accounts, lambda: accounts.post(url, payload, key=OTHER),
                    403, "unauthorized", NOT_YOUR_REGISTRATION)
    ca_account = accounts.gateway.ca.accounts[1]
    assert (ca_account.status, ca_account.contact) == ("valid", ["mailto:admin@example.test"])
    # v1 has no unsigned registration read.
    assert_v1_problem(accounts.get(a_reg), 405, "malformed")


def test_b_cannot_revoke_a_certificate(accounts):
    """
    B revoking A's certificate with B's key is Boulder's 403 (B holds no
    authorization for its names); the certificate stays unrevoked upstream.
    """
    for reason in (None, 0, 1):
        payload = {"resource": "revoke-cert", "certificate": b64url(accounts.state["cert_der"])}
        if reason is not None:
            payload["reason"] = reason
        attempt(accounts, lambda: accounts.post("/acme/revoke-cert", payload, key=OTHER),
                403, "unauthorized", NOT_YOUR_CERTIFICATE)
    assert [c.revoked_reason for c in accounts.gateway.ca.certificates] == [None]


def test_b_cannot_use_a_authorizations(accounts):
    """
    B asking for a certificate for A's validated name is refused before any
    upstream order: A's authorizations are A's.
    """
    csr = make_csr([NAME])
    attempt(accounts, lambda: accounts.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(csr)},
                                            key=OTHER),
            403, "unauthorized", f"not found or expired: {NAME}.")


def test_b_cannot_mix_a_ids_into_its_urls(accounts):
    """
    A's challenge id under B's authorization is not found: a challenge is
    only reachable below its own authorization.
    """
    b_authz = accounts.new_authz("b.example.test", OTHER)
    b_authz_id = b_authz.header("location").rsplit("/", 1)[1]
    a_challenge_id = accounts.state["pending_challenges"][0]["uri"].rsplit("/", 1)[1]
    assert_v1_problem(accounts.get(f"/acme/challenge/{b_authz_id}/{a_challenge_id}"), 404,
                      "malformed", "No such challenge")
    attempt(accounts, lambda: accounts.post(f"/acme/challenge/{b_authz_id}/{a_challenge_id}",
                                            {"resource": "challenge", "type": "http-01"}, key=OTHER),
            404, "malformed", "No such challenge")


def test_certificate_url_reveals_only_the_certificate(accounts):
    """
    The certificate URL serves the public certificate and its issuer link,
    nothing private: no account, key, contact or upstream detail; and there
    is no signed variant of it that would reveal more.
    """
    reply = accounts.get(accounts.state["cert_url"])
    assert reply.status == 200
    assert reply.header("content-type") == "application/pkix-cert"
    assert reply.body == accounts.state["cert_der"]
    x509.load_der_x509_certificate(reply.body)
    text = repr(reply.headers)
    for secret in (accounts.gateway.ca.base_url, KEY.thumbprint, "admin@example.test",
                   accounts.state["a_reg"]):
        assert secret not in text
    assert_v1_problem(accounts.post(accounts.state["cert_url"], {"resource": "cert"}, key=OTHER),
                      405, "malformed")


def test_unsigned_reads_expose_no_account(accounts):
    """
    The unsigned authorization and challenge reads (which v1 clients poll)
    show what Boulder showed -- the identifier, status, challenges and key
    authorizations -- but not A's registration, contact or upstream URLs.
    """
    for url in [accounts.state["pending_url"]] + [c["uri"] for c in accounts.state["pending_challenges"]]:
        reply = accounts.get(url)
        assert reply.status in (200, 202), reply.body
        for secret in (accounts.gateway.ca.base_url, "admin@example.test", accounts.state["a_reg"]):
            assert secret.encode() not in reply.body
            assert secret not in repr(reply.headers)
