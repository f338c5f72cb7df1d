"""
The upstream client alone obtains, revokes and rolls over real certificates
and accounts at a real Pebble on loopback.
"""

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.keys.jose import AccountKey, dns01_txt_value
from gateway.upstream.client import PollPolicy, UpstreamClient
from gateway.upstream.errors import UpstreamProblem
from tests.support.responders import ChallengeFiles, listen_http01
from tests.support.stack import certificate_names, verify_chain

pytestmark = pytest.mark.integration

FAST_POLLING = PollPolicy(initial=0.05, factor=1.5, maximum=1.0, timeout=30.0)


def rsa_key(bits=2048):
    return AccountKey.from_private_key(rsa.generate_private_key(65537, bits))


def ec_key(curve=ec.SECP256R1):
    return AccountKey.from_private_key(ec.generate_private_key(curve()))


def make_csr(names, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER), key


def client_for(pebble):
    from twisted.internet import reactor

    return UpstreamClient.create(
        reactor, pebble.directory_url, ca_bundle=pebble.ca_bundle, poll_policy=FAST_POLLING
    )


async def validate_all(client, account, order, dns_server, files, prefer="http-01"):
    """
    Complete every authorization of ``order``: http-01 through ``files``,
    dns-01 (always for wildcards) through the test DNS server.
    """
    for url in order.authorizations:
        authorization = await client.get_authorization(account, url)
        if authorization.status == "valid":
            continue
        kind = "dns-01" if authorization.wildcard or prefer == "dns-01" else "http-01"
        challenge = authorization.challenge(kind)
        assert challenge is not None, f"{authorization.name} offers no {kind}"
        key_authorization = account.key.key_authorization(challenge.token)
        record = "_acme-challenge." + authorization.identifier + "."
        if kind == "http-01":
            files.publish(challenge.token, key_authorization)
        else:
            dns_server.set_txt(record, dns01_txt_value(key_authorization))
        try:
            await client.answer_challenge(account, challenge.url)
            final = await client.poll_authorization(account, url)
        finally:
            if kind == "dns-01":
                dns_server.clear_txt(record)
            files.withdraw(challenge.token)
        assert final.status == "valid", final


async def issue(client, key, names, dns_server, pebble, prefer="http-01"):
    from twisted.internet import reactor

    files = ChallengeFiles()
    port = listen_http01(reactor, pebble.http_port, files)
    try:
        account = await client.find_account(key) or await client.new_account(
            key, contact=["mailto:admin@example.test"]
        )
        order = await client.new_order(account, names)
        await validate_all(client, account, order, dns_server, files, prefer)
        order = await client.poll_order(account, order.url)
        assert order.status in ("ready", "pending")
        csr, cert_key = make_csr(names)
        order = await client.finalize(account, order, csr)
        assert order.status == "valid", order
        chain = await client.download_certificate(account, order.certificate)
    finally:
        await port.stopListening()
    return account, chain, cert_key


def check_certificate(pebble, chain, names):
    concrete = next(n for n in names if not n.startswith("*."))
    leaf = verify_chain(chain.leaf, chain.issuers, pebble.root_pem(), concrete)
    assert certificate_names(leaf) == set(names)
    return leaf


@pytest_twisted.ensureDeferred
async def test_http01_rsa_account(pebble, dns_server):
    """
    An RSA account key gets a two-name certificate over http-01 that chains to
    Pebble's root and carries exactly the requested names.
    """
    client = client_for(pebble)
    names = ["www.http01.example.test", "http01.example.test"]
    account, chain, _ = await issue(client, rsa_key(), names, dns_server, pebble)
    check_certificate(pebble, chain, names)
    assert account.url.startswith("https://localhost:")


@pytest_twisted.ensureDeferred
async def test_dns01_ec_p256_account(pebble, dns_server):
    """
    An EC P-256 account key (ES256) gets a certificate over dns-01.
    """
    client = client_for(pebble)
    names = ["dns01.example.test"]
    _, chain, _ = await issue(client, ec_key(), names, dns_server, pebble, prefer="dns-01")
    check_certificate(pebble, chain, names)


@pytest_twisted.ensureDeferred
async def test_wildcard_and_base_in_one_order_p384(pebble, dns_server):
    """
    A wildcard and its base domain share one order: two authorizations for the
    same identifier, told apart by the wildcard flag; the wildcard only by
    dns-01.  The account key is EC P-384 (ES384).
    """
    client = client_for(pebble)
    names = ["*.wild.example.test", "wild.example.test"]
    key = ec_key(ec.SECP384R1)
    account = await client.new_account(key)
    order = await client.new_order(account, names)
    authorizations = [await client.get_authorization(account, u) for u in order.authorizations]
    assert sorted((a.identifier, a.wildcard) for a in authorizations) == [
        ("wild.example.test", False), ("wild.example.test", True)
    ]
    wildcard = next(a for a in authorizations if a.wildcard)
    assert {c.type for c in wildcard.challenges} >= {"dns-01"}
    assert wildcard.challenge("http-01") is None
    _, chain, _ = await issue(client, key, names, dns_server, pebble)
    check_certificate(pebble, chain, names)


@pytest_twisted.ensureDeferred
async def test_revoke_by_account_and_by_certificate_key(pebble, dns_server):
    """
    A certificate is revoked with the account key (kid); another with its own
    key (jwk); revoking again is ``alreadyRevoked``.  Pebble's management
    interface confirms both.
    """
    client = client_for(pebble)
    key = rsa_key()
    _, chain, _ = await issue(client, key, ["revoke-a.example.test"], dns_server, pebble)
    account = await client.find_account(key)
    await client.revoke_certificate(chain.leaf, reason=4, account=account)
    serial = format(x509.load_der_x509_certificate(chain.leaf).serial_number, "x")
    assert pebble.certificate_status(serial)["Status"] == "Revoked"
    with pytest.raises(UpstreamProblem) as raised:
        await client.revoke_certificate(chain.leaf, account=account)
    assert raised.value.code == "alreadyRevoked"

    _, chain2, cert_key = await issue(client, key, ["revoke-b.example.test"], dns_server, pebble)
    await client.revoke_certificate(
        chain2.leaf, reason=1, certificate_key=AccountKey.from_private_key(cert_key)
    )
    serial2 = format(x509.load_der_x509_certificate(chain2.leaf).serial_number, "x")
    assert pebble.certificate_status(serial2)["Status"] == "Revoked"


@pytest_twisted.ensureDeferred
async def test_key_change_account_lifecycle(pebble, dns_server):
    """
    keyChange moves the account to the new key: the new key finds the same
    account URL, the old key no longer does.  Contact update and deactivation
    work, and a deactivated account cannot order.
    """
    client = client_for(pebble)
    old, new = rsa_key(), ec_key()
    assert await client.find_account(old) is None
    account = await client.new_account(old, contact=["mailto:a@example.test"])
    rolled = await client.change_key(account, new)
    found = await client.find_account(new)
    assert found is not None and found.url == account.url
    assert await client.find_account(old) is None
    updated = await client.update_account(rolled, ["mailto:b@example.test"])
    assert updated.contact == ("mailto:b@example.test",)
    deactivated = await client.deactivate_account(updated)
    assert deactivated.status == "deactivated"
    with pytest.raises(UpstreamProblem) as raised:
        await client.new_order(deactivated, ["after.example.test"])
    assert raised.value.code == "unauthorized"


@pytest_twisted.ensureDeferred
async def test_authorization_deactivation(pebble):
    """
    A pending authorization can be deactivated.
    """
    client = client_for(pebble)
    account = await client.new_account(ec_key())
    order = await client.new_order(account, ["deactivate.example.test"])
    authorization = await client.deactivate_authorization(account, order.authorizations[0])
    assert authorization.status == "deactivated"


@pytest_twisted.ensureDeferred
async def test_survives_half_of_nonces_rejected(pebble_factory, dns_server):
    """
    With Pebble rejecting half of all good nonces, bounded badNonce retries
    still get a certificate.
    """
    noisy = pebble_factory(env={"PEBBLE_WFE_NONCEREJECT": "50"})
    client = UpstreamClient.create(
        __import__("twisted.internet.reactor", fromlist=["reactor"]),
        noisy.directory_url, ca_bundle=noisy.ca_bundle, poll_policy=FAST_POLLING,
        max_nonce_retries=12,
    )
    names = ["nonces.example.test"]
    _, chain, _ = await issue(client, rsa_key(), names, dns_server, noisy)
    check_certificate(noisy, chain, names)


@pytest_twisted.ensureDeferred
async def test_reused_authorizations_make_orders_ready_at_once(pebble_factory, dns_server):
    """
    With Pebble reusing every valid authorization, a second order for the
    same name is ready at creation, and is finalized without validation.
    """
    reusing = pebble_factory(env={"PEBBLE_AUTHZREUSE": "100"})
    client = client_for(reusing)
    key = ec_key()
    names = ["reuse.example.test"]
    await issue(client, key, names, dns_server, reusing)
    account = await client.find_account(key)
    order = await client.new_order(account, names)
    assert order.status == "ready"
    csr, _ = make_csr(names)
    order = await client.finalize(account, order, csr)
    chain = await client.download_certificate(account, order.certificate)
    check_certificate(reusing, chain, names)
