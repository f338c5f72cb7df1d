"""
The v1 wire shapes of `gateway.v1.messages`, member by member (issue 21):
every URL at Boulder's path, the directory's ``meta`` (only what a v1
client can read passed on from upstream), a registration's status and
``agreement``, a challenge's status, ``uri``, ``keyAuthorization`` and
``validationRecord``, an authorization's challenges and ``combinations``
(dns-01 only for a wildcard), and a leaf's ``Link: rel="up"``.
"""

from __future__ import annotations

import json

import pytest

from gateway.store import Account, Authorization, Challenge
from gateway.v1 import messages
from gateway.v1.messages import V1URLs

BASE = "https://gw.test/prefix"
URLS = V1URLs(BASE)
WHEN = "2026-12-03T06:00:00Z"
LATER = "2026-12-10T06:00:00Z"


def _account(**fields) -> Account:
    values = dict(id=7, thumbprint="tp", public_jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
                  upstream_url="https://ca.test/acct/1", contact=("mailto:a@example.test",),
                  agreement=None, status="valid", created_at=WHEN, initial_ip="192.0.2.1")
    values.update(fields)
    return Account(**values)


def _authorization(**fields) -> Authorization:
    values = dict(id="az1", account_id=7, order_id="o1", upstream_url="https://ca.test/authz/1",
                  identifier="www.example.test", wildcard=False, status="pending", expires=LATER,
                  created_at=WHEN, updated_at=WHEN)
    values.update(fields)
    return Authorization(**values)


def _challenge(challenge_id: str, kind: str, status: str = "pending") -> Challenge:
    return Challenge(id=challenge_id, authorization_id="az1", account_id=7,
                     upstream_url=f"https://ca.test/chall/{challenge_id}", type=kind,
                     token=f"token-{challenge_id}", status=status)


def test_every_url_is_at_boulders_path():
    assert (URLS.directory, URLS.new_reg, URLS.reg(7), URLS.new_authz, URLS.authz("az1"),
            URLS.challenge("az1", "c1"), URLS.new_cert, URLS.cert("c9"), URLS.issuer("i1"),
            URLS.revoke_cert, URLS.key_change, URLS.terms) == (
        f"{BASE}/directory", f"{BASE}/acme/new-reg", f"{BASE}/acme/reg/7", f"{BASE}/acme/new-authz",
        f"{BASE}/acme/authz/az1", f"{BASE}/acme/challenge/az1/c1", f"{BASE}/acme/new-cert",
        f"{BASE}/acme/cert/c9", f"{BASE}/acme/issuer-cert/i1", f"{BASE}/acme/revoke-cert",
        f"{BASE}/acme/key-change", f"{BASE}/terms")


def test_the_directory_lists_the_v1_resources_and_the_readable_meta():
    directory = messages.directory(URLS, {"website": "https://ca.test/", "caaIdentities": ["ca.test"],
                                          "termsOfService": "https://ca.test/tos",
                                          "externalAccountRequired": True})
    assert directory == {
        "new-reg": f"{BASE}/acme/new-reg", "new-authz": f"{BASE}/acme/new-authz",
        "new-cert": f"{BASE}/acme/new-cert", "revoke-cert": f"{BASE}/acme/revoke-cert",
        "key-change": f"{BASE}/acme/key-change",
        "meta": {"terms-of-service": f"{BASE}/terms", "website": "https://ca.test/",
                 "caaIdentities": ["ca.test"]},
    }
    text = json.dumps(directory)
    assert "newOrder" not in text and "newNonce" not in text


@pytest.mark.parametrize("meta", [
    {},
    {"website": 5, "caaIdentities": "ca.test"},
    {"website": None, "caaIdentities": ["ca.test", 5]},
    {"caaIdentities": {"ca.test": True}},
])
def test_upstream_meta_a_v1_client_cannot_read_is_left_out(meta):
    assert messages.directory(URLS, meta)["meta"] == {"terms-of-service": f"{BASE}/terms"}


def test_a_registration():
    assert messages.registration(_account()) == {
        "id": 7, "key": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
        "contact": ["mailto:a@example.test"], "initialIp": "192.0.2.1", "createdAt": WHEN,
        "status": "valid",
    }


@pytest.mark.parametrize("status", ["deactivated", "revoked"])
def test_a_registration_that_is_not_valid_shows_deactivated(status):
    assert messages.registration(_account(status=status))["status"] == "deactivated"


@pytest.mark.parametrize("own, gateways, shown", [
    ("https://gw.test/terms", None, "https://gw.test/terms"),
    ("https://gw.test/terms", "https://ca.test/tos", "https://gw.test/terms"),
    (None, "https://ca.test/tos", "https://ca.test/tos"),
])
def test_a_registration_shows_the_agreement_the_client_sent_else_the_gateways(own, gateways, shown):
    assert messages.registration(_account(agreement=own), agreed_terms=gateways)["agreement"] == shown


def test_a_registration_without_any_agreement_shows_none():
    assert "agreement" not in messages.registration(_account(), agreed_terms=None)
    assert "agreement" not in messages.registration(_account(agreement=None), agreed_terms="")


def test_a_challenge():
    authorization = _authorization()
    assert messages.challenge(URLS, authorization, _challenge("c1", "http-01"), "tp") == {
        "type": "http-01", "status": "pending", "uri": f"{BASE}/acme/challenge/az1/c1",
        "token": "token-c1", "keyAuthorization": "token-c1.tp",
        "validationRecord": {"uri": f"{BASE}/acme/challenge/az1/c1"},
    }


@pytest.mark.parametrize("authorization_status, challenge_status, shown", [
    ("pending", "processing", "pending"),
    ("pending", "pending", "pending"),
    ("valid", "valid", "valid"),
    ("invalid", "pending", "invalid"),
    ("invalid", "processing", "invalid"),
    ("pending", "invalid", "invalid"),
    ("deactivated", "valid", "valid"),
])
def test_a_challenge_status(authorization_status, challenge_status, shown):
    body = messages.challenge(URLS, _authorization(status=authorization_status),
                              _challenge("c1", "dns-01", challenge_status), "tp")
    assert body["status"] == shown


def test_a_challenge_with_its_error_and_records():
    error = {"type": "urn:acme:error:unauthorized", "detail": "no", "status": 403}
    records = [{"hostname": "www.example.test", "port": "443", "addressesResolved": ["192.0.2.1"]}]
    body = messages.challenge(URLS, _authorization(), _challenge("c1", "tls-sni-01"), "tp",
                              error=error, validation_record=records)
    assert body["error"] == error
    assert body["validationRecord"] == records
    assert body["validationRecord"][0] is not records[0], "a copy"


def test_a_tls_sni_01_challenge_not_checked_yet_has_no_records():
    body = messages.challenge(URLS, _authorization(), _challenge("c1", "tls-sni-01"), "tp")
    assert "validationRecord" not in body and "error" not in body


def test_an_authorization_shows_the_v1_challenge_types_one_per_combination():
    challenges = [_challenge("c1", "http-01"), _challenge("c2", "tls-alpn-01"), _challenge("c3", "dns-01"),
                  _challenge("c4", "tls-sni-01")]
    error = {"type": "urn:acme:error:connection", "detail": "refused", "status": 400}
    body = messages.authorization(URLS, _authorization(), challenges, "tp", errors={"c3": error},
                                  validation_records={"c4": [{"hostname": "h"}]})
    assert body["identifier"] == {"type": "dns", "value": "www.example.test"}
    assert (body["status"], body["expires"]) == ("pending", LATER)
    assert [c["type"] for c in body["challenges"]] == ["http-01", "dns-01", "tls-sni-01"]
    assert body["combinations"] == [[0], [1], [2]]
    assert [c.get("error") for c in body["challenges"]] == [None, error, None]
    assert body["challenges"][2]["validationRecord"] == [{"hostname": "h"}]
    assert body["challenges"][0]["keyAuthorization"] == "token-c1.tp"
    assert body["challenges"][1]["uri"] == f"{BASE}/acme/challenge/az1/c3"


def test_a_wildcard_authorization_shows_only_dns_01():
    challenges = [_challenge("c1", "http-01"), _challenge("c3", "dns-01")]
    body = messages.authorization(URLS, _authorization(identifier="example.test", wildcard=True),
                                  challenges, "tp")
    assert body["identifier"] == {"type": "dns", "value": "*.example.test"}
    assert [c["type"] for c in body["challenges"]] == ["dns-01"]
    assert body["combinations"] == [[0]]


def test_an_authorization_without_an_expiry_shows_none():
    body = messages.authorization(URLS, _authorization(expires=None), [], "tp")
    assert "expires" not in body
    assert (body["challenges"], body["combinations"]) == ([], [])


def test_a_leaf_links_up_to_its_first_issuer_only():
    assert messages.certificate_links(URLS, iter(["i1", "i2"])) == [f'<{BASE}/acme/issuer-cert/i1>;rel="up"']
    assert messages.certificate_links(URLS, []) == []
    assert messages.link("https://x.test/a", "next") == '<https://x.test/a>;rel="next"'
