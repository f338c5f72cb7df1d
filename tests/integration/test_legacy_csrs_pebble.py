"""
Legacy clients' CSRs (the committed vectors of ``tests/vectors/csr/``)
through the in-process v1 face to a real Pebble, Debian's 2.4 and today's:
a version-2 CSR of certbot 0.31/1.28 gets its certificate (the DER went
upstream as the client signed it, and Go's parser ignores the version), and
a CN-only CSR, which Pebble refuses, gets a v1 error that says to add the
name as a SAN.
"""

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.keys.jose import AccountKey, b64url
from tests.integration.test_v1_face_pebble import start_gateway, wait_valid
from tests.support.responders import ChallengeFiles, listen_http01
from tests.support.stack import certificate_names, verify_chain
from tests.support.v1_client import V1TestClient
from tests.test_csr import spki, vector

pytestmark = pytest.mark.integration


@pytest.fixture(params=["debian-2.4", "current"])
def reusing_pebble(request, pebble_factory):
    """
    A Pebble that reuses valid authorizations (so a two-name new-cert after
    two single-name new-authz needs no revalidation), of either build.
    """
    return pebble_factory(env={"PEBBLE_AUTHZREUSE": "100"}, current=request.param == "current")


async def authorize(client, directory, files, key, name):
    reply = await client.post(directory["new-authz"], {
        "resource": "new-authz", "identifier": {"type": "dns", "value": name}})
    assert reply.status == 201, reply.body
    challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
    key_authorization = key.key_authorization(challenge["token"])
    files.publish(challenge["token"], key_authorization)
    answered = await client.post(challenge["uri"], {
        "resource": "challenge", "type": "http-01", "keyAuthorization": key_authorization})
    assert answered.status == 202, answered.body
    assert (await wait_valid(client, reply.header("location"))).json()["status"] == "valid"


@pytest.mark.parametrize("name", ["certbot-0.31-rsa2048.pem", "certbot-1.28-ecdsa-p256.pem"])
@pytest_twisted.ensureDeferred
async def test_version_2_csr_gets_its_certificate(tmp_path, reusing_pebble, name):
    from twisted.internet import reactor

    pebble = reusing_pebble
    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    running, base = await start_gateway(tmp_path, pebble, [key])
    files = ChallengeFiles()
    http01 = listen_http01(reactor, pebble.http_port, files)
    try:
        client = V1TestClient(base, key)
        directory = await client.directory()
        names = ["legacy.example.test", "www.legacy.example.test"]
        for each in names:
            await authorize(client, directory, files, key, each)
        der = vector(name)
        reply = await client.post(directory["new-cert"], {"resource": "new-cert", "csr": b64url(der)})
        assert reply.status == 201, reply.body
        issuer = await client.get(reply.links("up")[0])
        leaf = verify_chain(reply.body, [issuer.body], pebble.root_pem(), names[0])
        assert certificate_names(leaf) == set(names)
        assert leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == spki(der), "the certificate is for the CSR's own key"
    finally:
        await http01.stopListening()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_cn_only_csr_refused_by_pebble_says_to_add_a_san(tmp_path, reusing_pebble):
    from twisted.internet import reactor

    pebble = reusing_pebble
    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    running, base = await start_gateway(tmp_path, pebble, [key])
    files = ChallengeFiles()
    http01 = listen_http01(reactor, pebble.http_port, files)
    try:
        client = V1TestClient(base, key)
        directory = await client.directory()
        await authorize(client, directory, files, key, "cn-only.example.test")
        reply = await client.post(directory["new-cert"], {
            "resource": "new-cert", "csr": b64url(vector("openssl-cn-only-rsa2048.pem"))})
        assert reply.status == 400, reply.body
        problem = reply.json()
        assert problem["type"] == "urn:acme:error:malformed"
        assert "only in its subject's Common Name" in problem["detail"]
        assert "subjectAltName=DNS:cn-only.example.test" in problem["detail"]
        assert running.context.upstream.request_counts["newOrder"] == 1
    finally:
        await http01.stopListening()
        await running.stop()
