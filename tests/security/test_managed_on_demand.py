"""
Managed mode makes an upstream account only for a request that needs one
(issue 18 item 6): 20 fresh keys POSTing to a challenge that does not exist
made 20 managed key files, 40 upstream ``newAccount`` calls and 20 account
rows, while Let's Encrypt allows 10 new accounts per IP address per 3
hours — enough to lock real new clients out.

A key the gateway has never seen owns no challenge, authorization,
registration or certificate, so those requests are refused as Boulder
refused an unregistered key (403 ``unauthorized``) before anything is made;
``new-reg``, ``new-authz`` and ``new-cert`` still make the account.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import build_test_gateway
from tests.security.harness import KEY, NAME, Harness, assert_v1_problem, make_csr


def fresh_key() -> AccountKey:
    return AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def managed(tmp_path):
    """
    A gateway in managed mode holding ``KEY`` only, with its managed-key
    directory.
    """
    directory = str(tmp_path / "managed")
    harness = Harness(build_test_gateway([KEY], unknown_keys="managed", managed_keys=directory))
    harness.register()  # KEY's account, with an authorization to aim at
    harness.state = {"directory": directory, "authz": harness.new_authz().json()}
    return harness


def made(harness: Harness) -> dict:
    """
    What fresh keys could have cost: managed key files, upstream
    ``newAccount`` calls, account rows.
    """
    directory = harness.state["directory"]
    files = os.listdir(directory) if os.path.isdir(directory) else []
    return {"key files": len(files), "newAccount": harness.gateway.ca.counts["newAccount"],
            "accounts": len(harness.snapshot()["store"]["accounts"])}


def _requests(harness: Harness):
    """
    Requests that act on what an account already has: (path, payload).
    """
    authz = harness.state["authz"]
    challenge = authz["challenges"][0]
    authz_url = challenge["uri"].rsplit("/", 1)[0].replace("/challenge/", "/authz/")
    return {
        "challenge that does not exist": (
            "/acme/challenge/nosuchauthz/1", {"resource": "challenge", "type": "http-01"}),
        "another account's challenge": (
            challenge["uri"], {"resource": "challenge", "type": "http-01"}),
        "another account's authorization": (
            authz_url, {"resource": "authz", "status": "deactivated"}),
        "a registration": ("/acme/reg/1", {"resource": "reg"}),
        "a certificate": ("/acme/revoke-cert", {
            "resource": "revoke-cert", "certificate": b64url(b"\x30\x03\x02\x01\x01")}),
    }


CASES = ("challenge that does not exist", "another account's challenge",
         "another account's authorization", "a registration")


def test_twenty_fresh_keys_at_a_missing_challenge_make_nothing(managed):
    """
    The issue's case: 20 fresh keys, each a POST to a challenge that does
    not exist — 20 refusals, and no key file, upstream account or row.
    """
    before = made(managed)
    for _ in range(20):
        reply = managed.post("/acme/challenge/nosuchauthz/1",
                             {"resource": "challenge", "type": "http-01"}, key=fresh_key())
        assert_v1_problem(reply, 403, "unauthorized", "No registration exists")
    assert made(managed) == before


@pytest.mark.parametrize("case", CASES)
def test_fresh_key_acting_on_nothing_makes_nothing(managed, case):
    path, payload = _requests(managed)[case]
    before = made(managed)
    reply = managed.post(path, payload, key=fresh_key())
    assert_v1_problem(reply, 403, "unauthorized")
    assert made(managed) == before


def test_fresh_key_revoking_makes_nothing(managed):
    """
    A certificate it never had: refused (the certificate does not even
    decode here), and nothing made.
    """
    before = made(managed)
    reply = managed.post(*_requests(managed)["a certificate"], key=fresh_key())
    assert reply.status in (400, 403), reply.body
    assert made(managed) == before
    leaf = Harness.fresh()  # any real certificate, from another CA
    issued = leaf.issue().body
    reply = managed.post("/acme/revoke-cert", {"resource": "revoke-cert",
                                               "certificate": b64url(issued)}, key=fresh_key())
    assert_v1_problem(reply, 403, "unauthorized", "No registration exists")
    assert made(managed) == before


def test_new_reg_and_new_authz_still_make_the_account(managed):
    """
    What needs an account gets one, once: a key file, an upstream account
    and a row for each fresh key.
    """
    before = made(managed)
    registering = fresh_key()
    managed.register(registering)
    reply = managed.new_authz(key=fresh_key())
    assert reply.status == 201, reply.body
    after = made(managed)
    assert after["key files"] == before["key files"] + 2
    assert after["accounts"] == before["accounts"] + 2
    assert after["newAccount"] > before["newAccount"]


def test_managed_account_acts_on_its_own_authorization(managed):
    """
    Once a managed key has its account, its own requests are bound as
    before: it deactivates its own authorization.
    """
    key = fresh_key()
    reply = managed.new_authz(key=key)
    assert reply.status == 201, reply.body
    deactivated = managed.post(reply.header("location"),
                               {"resource": "authz", "status": "deactivated"}, key=key)
    assert deactivated.status == 200, deactivated.body
    assert deactivated.json()["status"] == "deactivated"
