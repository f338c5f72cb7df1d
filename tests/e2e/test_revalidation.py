"""
Revalidation, wildcards and managed accounts, end to end: the gateway as a
process in front of a Pebble that does **not** reuse authorizations
(``PEBBLE_AUTHZREUSE=0``), so every name of a certificate must be validated
again in the order ``new-cert`` finalizes — by the gateway itself.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.keys.jose import AccountKey, b64url
from tests.e2e.test_legacy_clients import (
    assert_certbot_issued,
    assert_issued,
    seed_certbot_account,
    state_accounts,
    write_pem,
)
from tests.integration.test_upstream_pebble import make_csr
from tests.support.bind import BindServer
from tests.support.legacy import Certbot, off_reactor
from tests.support.stack import REPO_ROOT, Pebble, certificate_names, free_port, verify_chain
from tests.support.v1_client import V1TestClient

pytestmark = pytest.mark.e2e

NO_REUSE = {"PEBBLE_AUTHZREUSE": "0"}
HOOK = os.path.join(REPO_ROOT, "tests", "support", "hooks", "gateway-dns01-hook.sh")


def http01_flag(pebble) -> list:
    """
    The gateway's HTTP-01 responder on the port Pebble validates, as port
    80's challenge path would be routed to it in production.
    """
    return ["--http01-listen", f"tcp:{pebble.http_port}:interface=127.0.0.1"]


async def new_cert(base: str, key: AccountKey, names, csr_key=None) -> tuple:
    """
    A v1 client that believes its old v1 authorizations still hold: its
    only request is ``new-cert`` (with a CSR for ``csr_key``, or a new key).

    :return: ``(reply, issuer DER chain)``.
    """
    client = V1TestClient(base, key)
    directory = await client.directory()
    csr, _ = make_csr(list(names), key=csr_key)
    reply = await client.post(directory["new-cert"], {"resource": "new-cert", "csr": b64url(csr)})
    issuers = []
    if reply.status == 201:
        up = reply.links("up")
        while up:
            issuer = await client.get(up[0])
            assert issuer.status == 200
            issuers.append(issuer.body)
            up = issuer.links("up")
    return reply, issuers


def test_certbot_two_names_revalidated_over_http01(tmp_path, pebble_factory, gateways):
    """
    certbot 1.32 with its existing account gets a two-name certificate from
    a CA that reuses no authorization; its webroot is served by nobody, so
    every validation Pebble makes is answered by the gateway's HTTP-01
    responder — for certbot's own new-authz challenges and again for the
    final order.
    """
    pebble = pebble_factory(env=NO_REUSE, http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    key = rsa.generate_private_key(65537, 2048)
    gateway = gateways(pebble, keys_dir, start=False, extra_args=http01_flag(pebble))
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, key, keys_dir)
    gateway.start()
    names = ["reval-a.example.test", "reval-b.example.test"]
    unserved = tmp_path / "webroot-nobody-serves"
    unserved.mkdir()
    certbot.certonly_webroot(names, str(unserved))
    assert_certbot_issued(certbot, pebble, names)
    assert "revalidating" in gateway.log()


@pytest_twisted.ensureDeferred
async def test_new_cert_without_new_authz_is_revalidated(tmp_path, pebble_factory, gateways):
    """
    A client that calls new-cert without any new-authz (its v1
    authorizations were made at the old CA) gets its certificate.
    """
    pebble = pebble_factory(env=NO_REUSE, http_port=free_port())
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    keys_dir = str(tmp_path / "keys")
    write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
    gateway = await off_reactor(gateways, pebble, keys_dir, extra_args=http01_flag(pebble))
    names = ["direct-a.example.test", "direct-b.example.test"]
    reply, issuers = await new_cert(gateway.url, key, names)
    assert reply.status == 201, reply.body
    assert_issued(reply.body, issuers, pebble, names)


@pytest_twisted.ensureDeferred
async def test_wildcard_and_base_client_publishes_txt(tmp_path, pebble_factory, dns_server, gateways):
    """
    A v1 client asks new-authz for ``*.name`` and ``name`` and publishes its
    own dns-01 TXT records (two values on one name); the wildcard's v1
    authorization shows ``*.name`` and offers only dns-01; the certificate
    carries both names.  (certbot and the acme library refuse wildcards in
    v1 mode on their own side, so this client is the suite's own.)
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from gateway.keys.jose import dns01_txt_value

    pebble = pebble_factory(env={"PEBBLE_AUTHZREUSE": "100"}, http_port=free_port())
    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    keys_dir = str(tmp_path / "keys")
    write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
    gateway = await off_reactor(gateways, pebble, keys_dir)
    client = V1TestClient(gateway.url, key)
    directory = await client.directory()
    names = ["*.wild1.example.test", "wild1.example.test"]
    record = "_acme-challenge.wild1.example.test."
    try:
        for name in names:
            reply = await client.post(directory["new-authz"], {
                "resource": "new-authz", "identifier": {"type": "dns", "value": name}})
            assert reply.status == 201, reply.body
            authz = reply.json()
            assert authz["identifier"]["value"] == name
            types = [c["type"] for c in authz["challenges"]]
            if name.startswith("*."):
                assert types == ["dns-01"]
            challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
            await off_reactor(dns_server.set_txt, record,
                              dns01_txt_value(key.key_authorization(challenge["token"])))
            reply = await client.post(challenge["uri"], {"resource": "challenge", "type": "dns-01"})
            assert reply.status == 202, reply.body
            authz_url = reply.links("up")[0]
            for _ in range(100):
                state = (await client.get(authz_url)).json()["status"]
                if state != "pending":
                    break
                await deferLater(reactor, 0.1, lambda: None)
            assert state == "valid", name
    finally:
        await off_reactor(dns_server.clear_txt, record)
    reply, issuers = await new_cert(gateway.url, key, names)
    assert reply.status == 201, reply.body
    root = pebble.root_pem()
    verify_chain(reply.body, issuers, root, "anything.wild1.example.test")
    certificate = verify_chain(reply.body, issuers, root, "wild1.example.test")
    assert certificate_names(certificate) == set(names)


@pytest_twisted.ensureDeferred
async def test_wildcard_and_base_through_dns01_hook(tmp_path, pebble_factory, dns_server, gateways):
    """
    With ``--dns01-hook``, the gateway validates a wildcard and its base
    domain itself (two TXT values on one name), calls the hook with the
    action, domain and value (and certbot's variables), and cleans up.
    """
    pebble = pebble_factory(env=NO_REUSE, http_port=free_port())
    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    keys_dir = str(tmp_path / "keys")
    write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
    hook_log = tmp_path / "hook.log"
    gateway = await off_reactor(
        gateways, pebble, keys_dir,
        extra_args=["--dns01-hook", f"{HOOK} {dns_server.api_url} {hook_log}"],
    )
    names = ["*.wild2.example.test", "wild2.example.test"]
    reply, issuers = await new_cert(gateway.url, key, names)
    assert reply.status == 201, reply.body
    leaf = verify_chain(reply.body, issuers, pebble.root_pem(), "www.wild2.example.test")
    assert certificate_names(leaf) == set(names)
    actions = [line.split()[:2] for line in hook_log.read_text().splitlines()]
    assert sorted(actions) == sorted([["deploy", "wild2.example.test"]] * 2
                                     + [["cleanup", "wild2.example.test"]] * 2)


@pytest_twisted.ensureDeferred
async def test_failed_revalidation_gives_the_ca_reason_and_cleans_up(tmp_path, pebble_factory, gateways):
    """
    A hook that publishes nothing: Pebble's refusal reaches the client as a
    v1 problem with the CA's reason, and the cleanup call is still made.
    """
    pebble = pebble_factory(env=NO_REUSE, http_port=free_port())
    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    keys_dir = str(tmp_path / "keys")
    write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
    hook_log = tmp_path / "hook.log"
    silent = tmp_path / "silent-hook.sh"
    silent.write_text(f"#!/bin/sh\necho \"$3 $4 $5\" >> {hook_log}\n")
    silent.chmod(0o755)
    gateway = await off_reactor(gateways, pebble, keys_dir, extra_args=["--dns01-hook", f"{silent} x y"])
    reply, _ = await new_cert(gateway.url, key, ["*.fails.example.test"])
    assert reply.status in (400, 403), reply.body
    problem = reply.json()
    assert problem["type"].startswith("urn:acme:error:")
    assert "Revalidation of *.fails.example.test by dns-01 failed" in problem["detail"]
    lines = hook_log.read_text().split("\n")
    assert any(line.startswith("deploy fails.example.test") for line in lines)
    assert any(line.startswith("cleanup fails.example.test") for line in lines)


@pytest_twisted.ensureDeferred
async def test_wildcard_and_base_through_rfc2136_with_bind(tmp_path, stack_dir, gateways):
    """
    With ``--dns01-rfc2136``, the gateway publishes the TXT records with
    TSIG-signed dynamic updates to a real BIND 9 that Pebble queries, and
    deletes them afterwards.
    """
    bind = await off_reactor(lambda: BindServer(str(tmp_path / "bind")).start())
    pebble = await off_reactor(
        lambda: Pebble(os.path.join(stack_dir, "pebble"), bind.address, http_port=free_port(),
                       env=NO_REUSE).start()
    )
    try:
        key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, pebble, keys_dir, extra_args=[
            "--dns01-rfc2136", bind.address,
            "--dns01-rfc2136-key-name", bind.key_name,
            "--dns01-rfc2136-key-secret", bind.secret,
            "--dns01-rfc2136-key-algorithm", bind.algorithm,
        ])
        names = ["*.w.rfc2136.test", "w.rfc2136.test"]
        reply, issuers = await new_cert(gateway.url, key, names)
        assert reply.status == 201, reply.body
        leaf = verify_chain(reply.body, issuers, pebble.root_pem(), "w.rfc2136.test")
        assert certificate_names(leaf) == set(names)
        assert bind.txt("_acme-challenge.w.rfc2136.test.") == []
    finally:
        await off_reactor(pebble.stop)
        await off_reactor(bind.stop)


def test_managed_mode_fresh_certbot_account(tmp_path, pebble_factory, gateways):
    """
    ``--unknown-keys managed``: certbot with no account registers a fresh
    key the gateway has never seen and gets a certificate; the gateway signs
    upstream with a key of its own bound to certbot's, and validated every
    name itself.
    """
    pebble = pebble_factory(env=NO_REUSE, http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, extra_args=http01_flag(pebble) + ["--unknown-keys", "managed",
                                                     "--allow-names", "*.example.test"])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    certbot.register("managed@example.test")
    names = ["managed-a.example.test", "managed-b.example.test"]
    unserved = tmp_path / "webroot-nobody-serves"
    unserved.mkdir()
    certbot.certonly_webroot(names, str(unserved))
    assert_certbot_issued(certbot, pebble, names)
    accounts = state_accounts(gateway.state)
    managed_dir = gateway.state + ".managed-keys"
    (certbot_thumbprint,) = [a[0] for a in accounts]
    assert os.listdir(managed_dir) == [certbot_thumbprint + ".pem"]
