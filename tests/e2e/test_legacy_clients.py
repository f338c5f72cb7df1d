"""
Real legacy ACME v1 clients against the gateway run as an operator runs it:
``acme-gateway serve`` as its own process (`GatewayProcess`), in front of
Debian's Pebble, with the clients' account keys in its ``--keys`` directory.

Every certificate must chain to Pebble's root and carry exactly the names
asked for.

Each test has a Pebble of its own (the ``upstream`` fixture), once under
each kind of noise (`tests.e2e.conftest.NOISE`): reusing every valid
authorization, reusing none, and Pebble's own defaults (50 % reuse, 5 % of
nonces rejected).  A v1 client validates each name through its own
``new-authz`` (a single-name order upstream) and only then asks for a
certificate for all of them, so the order a multi-name ``new-cert``
finalizes is ready only when the CA reuses the authorizations those
single-name orders validated: without reuse, multi-name flows need a means
for the gateway to validate names itself (`multi_name_means`: its dns-01
hook, or its HTTP-01 responder where the test leaves Pebble's port free).
A single-name flow needs none, whatever the CA reuses.

The clients, the gateway, Pebble and the DNS server are all separate
processes, so most tests are plain synchronous ones; only those whose http-01
files are served from the test's own reactor (``listen_well_known``) are
``async`` and run the clients ``off_reactor``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import ssl
import urllib.request

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.keys.jose import AccountKey
from tests.e2e.conftest import assert_means_used_as_needed, multi_name_means
from tests.support.gateway_process import GatewayProcess
from tests.support.legacy import (
    Certbot,
    Dehydrated,
    lineage_name,
    listen_well_known,
    off_reactor,
    run_acme1_client,
)
from tests.support.stack import certificate_names, verify_chain

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------

def thumbprint_of(key) -> str:
    return AccountKey.from_private_key(key).thumbprint


def write_pem(path: str, key) -> str:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    return path


def state_accounts(state_path: str) -> list:
    """``(thumbprint, upstream_url, status)`` of every account in the gateway's state."""
    connection = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)
    try:
        return connection.execute(
            "SELECT thumbprint, upstream_url, status FROM accounts ORDER BY id"
        ).fetchall()
    finally:
        connection.close()


def assert_issued(leaf_der: bytes, issuer_ders, pebble, names) -> x509.Certificate:
    """
    The leaf chains through ``issuer_ders`` to the root of the running
    ``pebble``, for every one of ``names``, and carries exactly those names.
    """
    root = pebble.root_pem()
    leaf = None
    for name in names:
        leaf = verify_chain(leaf_der, issuer_ders, root, name)
    assert certificate_names(leaf) == set(names)
    return leaf


def pebble_intermediate(pebble) -> bytes:
    """
    The DER of Pebble's current intermediate, from its management interface.

    dehydrated 0.7 with ``API=1`` builds ``chain.pem`` only by following the
    leaf's AIA ``CA Issuers`` URL, and Pebble's leaves carry none (Let's
    Encrypt's do), so its chain file stays empty here; the issuer to verify
    its leaf with comes from Pebble itself.
    """
    context = ssl.create_default_context(cafile=pebble.ca_bundle)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(f"{pebble.management_url}/intermediates/0", timeout=5) as response:
        return pem_ders(response.read())[0]


def assert_dehydrated_issued(dehydrated: Dehydrated, pebble, names) -> x509.Certificate:
    (leaf_der,) = pem_ders(dehydrated.cert_pem(names[0]))
    chain = dehydrated.chain_pem(names[0])
    issuers = pem_ders(chain) if chain.strip() else [pebble_intermediate(pebble)]
    return assert_issued(leaf_der, issuers, pebble, names)


def pem_ders(pem: bytes) -> list:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def assert_certbot_issued(certbot: Certbot, pebble, names) -> x509.Certificate:
    lineage = lineage_name(names)
    (leaf_der,) = pem_ders(certbot.live_cert(lineage))
    return assert_issued(leaf_der, pem_ders(certbot.chain_pem(lineage)), pebble, names)


#: What makes Pebble behave like Let's Encrypt within its reuse window.
REUSING = {"PEBBLE_AUTHZREUSE": "100"}


def seed_certbot_account(certbot: Certbot, gateway: GatewayProcess, key, keys_dir: str) -> str:
    """
    What a migrating operator has: certbot's account for the (now gateway-
    served) v1 directory, made against the old CA, and the same
    ``private_key.json`` copied into the gateway's key store.  The gateway
    loads keys at start-up, so it must be started after the copy.
    """
    account_id = certbot.seed_existing_account(key, regr_uri=f"{gateway.url}/acme/reg/4711")
    shutil.copy(certbot.account_key_path(), os.path.join(keys_dir, f"certbot-{account_id}.json"))
    return account_id


# --------------------------------------------------------------------------
# certbot 1.32
# --------------------------------------------------------------------------

def test_certbot_existing_account_standalone_then_renew_after_restart(tmp_path, upstream, dns_server,
                                                                     gateways):
    """
    certbot with an account it already had (never registering again) gets a
    two-name certificate over http-01 with its standalone server; the
    gateway signs upstream with that very key.  After a gateway restart on
    the same state file, ``certbot renew --force-renewal`` works too.
    certbot's standalone server takes Pebble's http-01 port, so the
    gateway's means (when the CA may not reuse) is its dns-01 hook.
    """
    pebble = upstream
    keys_dir = str(tmp_path / "keys")
    key = rsa.generate_private_key(65537, 2048)
    thumbprint = thumbprint_of(key)

    gateway = gateways(pebble, keys_dir, start=False,
                       extra_args=multi_name_means(pebble, dns_server, tmp_path))
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    account_id = seed_certbot_account(certbot, gateway, key, keys_dir)
    gateway.start()
    assert thumbprint in gateway.keys_list()

    names = ["certbot-a.example.test", "certbot-b.example.test"]
    certbot.certonly_standalone(names, pebble.http_port)
    first = assert_certbot_issued(certbot, pebble, names)

    assert certbot.account_ids() == [account_id], "certbot registered a new account"
    ((stored_thumbprint, upstream_url, status),) = state_accounts(gateway.state)
    assert stored_thumbprint == thumbprint
    assert status == "valid"
    assert upstream_url and upstream_url.startswith(f"https://localhost:{pebble.port}/")

    gateway.restart()
    certbot.renew(force=True)
    renewed = assert_certbot_issued(certbot, pebble, names)
    assert renewed.serial_number != first.serial_number
    assert certbot.account_ids() == [account_id]
    assert state_accounts(gateway.state) == [(thumbprint, upstream_url, "valid")]
    assert_means_used_as_needed(gateway, pebble)


def test_certbot_dns01_manual_hooks(tmp_path, upstream, dns_server, gateways):
    """
    certbot's ``--manual`` dns-01 with hooks that publish TXT records in the
    test DNS server, for an existing EC account; the gateway's means, when
    the CA may not reuse, is its HTTP-01 responder.
    """
    keys_dir = str(tmp_path / "keys")
    pebble = upstream
    key = ec.generate_private_key(ec.SECP256R1())
    gateway = gateways(pebble, keys_dir, start=False,
                       extra_args=multi_name_means(pebble, dns_server, tmp_path, kind="http-01"))
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    account_id = seed_certbot_account(certbot, gateway, key, keys_dir)
    gateway.start()

    # No wildcard: ACME v1 has none, and certbot refuses one in v1 mode.
    names = ["certbot-dns.example.test", "mail.certbot-dns.example.test"]
    certbot.certonly_dns_manual(names, dns_server.api_url)
    assert_certbot_issued(certbot, pebble, names)
    assert certbot.account_ids() == [account_id]
    assert [row[0] for row in state_accounts(gateway.state)] == [thumbprint_of(key)]
    assert_means_used_as_needed(gateway, pebble)


# --------------------------------------------------------------------------
# acme 1.32's v1 Client
# --------------------------------------------------------------------------

@pytest.fixture(params=["RS256", "ES256"])
def acme1_setup(request, tmp_path, upstream, dns_server, gateways):
    """
    An account key of the parameter's kind, already in the key store of a
    running gateway in front of the test's Pebble (with its dns-01 hook when
    the CA may not reuse: the test serves http-01 itself).
    """
    key = rsa.generate_private_key(65537, 2048) if request.param == "RS256" \
        else ec.generate_private_key(ec.SECP256R1())
    keys_dir = str(tmp_path / "keys")
    key_path = write_pem(os.path.join(keys_dir, "account.pem"), key)
    means = multi_name_means(upstream, dns_server, tmp_path)
    return request.param, key, key_path, gateways(upstream, keys_dir, extra_args=means)


@pytest_twisted.ensureDeferred
async def test_acme1_client_registers_and_issues_over_http01(tmp_path, upstream, acme1_setup):
    """
    acme 1.32's v1 ``Client``: new-reg (201) and agreement through the
    gateway, then http-01 for two names from a webroot this test serves on
    Pebble's http port, and the chain through ``Link rel="up"``.
    """
    from twisted.internet import reactor

    alg, key, key_path, gateway = acme1_setup
    pebble = upstream
    names = [f"acme1-{alg.lower()}.example.test", f"www.acme1-{alg.lower()}.example.test"]
    webroot = str(tmp_path / "webroot")
    listening = listen_well_known(reactor, pebble.http_port, webroot)
    try:
        result = await off_reactor(
            run_acme1_client, gateway.directory_url, key_path, names,
            out_dir=str(tmp_path / "out"), webroot=webroot, register=True,
        )
    finally:
        await listening.stopListening()

    assert result["account_uri"].startswith(gateway.url + "/acme/reg/")
    assert result["cert_uri"].startswith(gateway.url + "/acme/cert/")
    out = result["out_dir"]
    with open(os.path.join(out, "cert.der"), "rb") as f:
        leaf_der = f.read()
    chain_dir = os.path.join(out, "chain")
    issuers = []
    for index in range(len(os.listdir(chain_dir))):
        with open(os.path.join(chain_dir, f"{index}.der"), "rb") as f:
            issuers.append(f.read())
    assert issuers, "no chain fetched through Link rel=up"
    assert_issued(leaf_der, issuers, pebble, names)
    assert [row[0] for row in state_accounts(gateway.state)] == [thumbprint_of(key)]
    assert len(listening.resource.requests) >= len(names)
    assert_means_used_as_needed(gateway, pebble)


# --------------------------------------------------------------------------
# Debian's dehydrated 0.7.0
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_dehydrated_registers_and_issues_over_http01(tmp_path, upstream, dns_server, gateways):
    """
    Stock dehydrated 0.7.0 with ``API=1`` registers (new-reg) through the
    gateway and gets a two-name certificate over http-01 from its WELLKNOWN
    directory.

    dehydrated only sends new-reg for a key it has just generated itself or
    one given with ``--privkey`` (an existing ``account_key.pem``
    without ``registration_info.json`` is "already registered", and ``--cron``
    then refuses: "not implemented for ACMEv1"); a generated key cannot be in
    the gateway's store beforehand, and dehydrated deletes it when new-reg
    is refused.  So the operator generates the key, puts it into the store,
    and hands it to dehydrated with ``--privkey``.  (The gateway's means, when
    the CA may not reuse, is its dns-01 hook: the test serves http-01.)
    """
    from twisted.internet import reactor

    pebble = upstream
    keys_dir = str(tmp_path / "keys")
    key = rsa.generate_private_key(65537, 2048)
    write_pem(os.path.join(keys_dir, "dehydrated.pem"), key)
    gateway = await off_reactor(gateways, pebble, keys_dir,
                                extra_args=multi_name_means(pebble, dns_server, tmp_path))
    dehydrated = Dehydrated(str(tmp_path / "dehydrated"), gateway.directory_url)
    account_key = write_pem(os.path.join(dehydrated.workdir, "account.key"), key)
    with_key = ["--privkey", account_key]

    names = ["dehydrated.example.test", "www.dehydrated.example.test"]
    listening = listen_well_known(reactor, pebble.http_port, dehydrated.wellknown)
    try:
        registered = await off_reactor(dehydrated.run, "--register", "--accept-terms", *with_key)
        assert "Registering account key" in registered.stdout, registered.stdout
        await off_reactor(dehydrated.issue, names[0], extra_domains=names[1:], extra=with_key)
    finally:
        await listening.stopListening()

    with open(account_key + ".json") as f:
        assert '"id"' in f.read()
    assert_dehydrated_issued(dehydrated, pebble, names)
    assert [row[0] for row in state_accounts(gateway.state)] == [thumbprint_of(key)]
    assert_means_used_as_needed(gateway, pebble)


@pytest_twisted.ensureDeferred
async def test_dehydrated_with_a_migrated_account_issues_over_http01(tmp_path, upstream, gateways):
    """
    A dehydrated that registered at the old v1 CA keeps ``account_key.pem``
    and ``registration_info.json`` in its account directory and never sends
    new-reg again; with the key in the store, the gateway adopts the account
    on its first new-authz.  Its single-name certificate, and a forced
    renewal, need no means whatever the CA reuses, at one order each.
    """
    from twisted.internet import reactor

    pebble = upstream
    keys_dir = str(tmp_path / "keys")
    key = rsa.generate_private_key(65537, 2048)
    gateway = gateways(pebble, keys_dir, start=False)
    dehydrated = Dehydrated(str(tmp_path / "dehydrated"), gateway.directory_url)
    write_pem(dehydrated.account_key_path(), key)
    with open(os.path.join(dehydrated.account_dir(), "registration_info.json"), "w") as f:
        f.write('{"id": 4242, "key": {}, "contact": [], "agreement": "", "status": "valid"}\n')
    shutil.copy(dehydrated.account_key_path(), os.path.join(keys_dir, "account_key.pem"))
    await off_reactor(gateway.start)

    names = ["dehydrated-migrated.example.test"]
    listening = listen_well_known(reactor, pebble.http_port, dehydrated.wellknown)
    try:
        await off_reactor(dehydrated.issue, names[0])
        first = assert_dehydrated_issued(dehydrated, pebble, names)
        await off_reactor(dehydrated.issue, names[0], force=True)
    finally:
        await listening.stopListening()

    renewed = assert_dehydrated_issued(dehydrated, pebble, names)
    assert renewed.serial_number != first.serial_number
    assert [row[0] for row in state_accounts(gateway.state)] == [thumbprint_of(key)]
    assert gateway.log().count("cost 1 upstream order(s)") == 2
    assert "revalidating" not in gateway.log()
