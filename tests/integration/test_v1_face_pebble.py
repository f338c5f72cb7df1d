"""
The gateway's v1 face, in process, in front of a real Pebble: a v1 flow
request by request, checking the exact shapes legacy clients rely on.
"""

import os

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.process import serve
from gateway.process.wiring import ServeConfig
from gateway.keys.jose import AccountKey, b64url
from gateway.keys.keystore import KeyStore
from tests.integration.test_upstream_pebble import make_csr
from tests.support.responders import ChallengeFiles, listen_http01
from tests.support.stack import certificate_names, verify_chain
from tests.support.v1_client import V1TestClient

pytestmark = pytest.mark.integration


async def start_gateway(tmp_path, pebble, keys):
    from twisted.internet import reactor

    config = ServeConfig(
        upstream=pebble.directory_url,
        keys=str(tmp_path),
        upstream_ca_bundle=pebble.ca_bundle,
        state=os.path.join(str(tmp_path), "state.sqlite3"),
        listen="tcp:0:interface=127.0.0.1",
    )
    running = await serve.start(reactor, config, KeyStore.from_keys(keys))
    running.context.upstream.poll_policy = running.context.upstream.poll_policy.__class__(
        initial=0.05, factor=1.5, maximum=0.5, timeout=30
    )
    return running, f"http://127.0.0.1:{running.port.getHost().port}"


async def wait_valid(client, authz_url, tries=100):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(tries):
        reply = await client.get(authz_url)
        if reply.json()["status"] != "pending":
            return reply
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("authorization stayed pending")


@pytest_twisted.ensureDeferred
async def test_full_v1_flow_shapes(tmp_path, pebble):
    """
    new-reg (201, Location, Links), re-registration (409 + Location),
    reg update (202), new-authz (201, Location, Link next), challenge POST
    (202, Link up, same uri), unauthenticated authz GET, new-cert (201, DER,
    Location, Link up), certificate and issuer GETs, HEAD nonces — and a
    certificate that chains to Pebble's root.
    """
    from twisted.internet import reactor

    from twisted.logger import globalLogPublisher

    key = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    running, base = await start_gateway(tmp_path, pebble, [key])
    events = []
    globalLogPublisher.addObserver(events.append)
    files = ChallengeFiles()
    http01 = listen_http01(reactor, pebble.http_port, files)
    try:
        client = V1TestClient(base, key)
        directory = await client.directory()
        assert set(directory) >= {"new-reg", "new-authz", "new-cert", "revoke-cert", "key-change", "meta"}
        assert "newNonce" not in directory and "newOrder" not in str(directory)
        head = await client.get(base + "/directory", method="HEAD")
        assert head.status == 200 and head.header("replay-nonce")
        head_post_only = await client.get(directory["new-reg"], method="HEAD")
        assert head_post_only.status == 405 and head_post_only.header("replay-nonce")

        reply = await client.post(directory["new-reg"], {"resource": "new-reg",
                                                         "contact": ["mailto:v1@example.test"]})
        assert reply.status == 201, reply.body
        registration = reply.json()
        assert isinstance(registration["id"], int)
        reg_url = reply.header("location")
        assert reg_url == f"{base}/acme/reg/{registration['id']}"
        assert reply.links("next") == [directory["new-authz"]]
        terms = reply.links("terms-of-service")[0]
        terms_reply = await client.get(terms)
        assert terms_reply.status == 200 and terms_reply.body

        again = await client.post(directory["new-reg"], {"resource": "new-reg"})
        assert again.status == 409 and again.header("location") == reg_url
        assert again.json()["type"] == "urn:acme:error:malformed"

        update = await client.post(reg_url, {"resource": "reg", "agreement": terms,
                                             "key": key.public_jwk_json, "status": "valid"})
        assert update.status == 202 and update.json()["agreement"] == terms

        name = "v1face.example.test"
        reply = await client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}})
        assert reply.status == 201, reply.body
        authz_url = reply.header("location")
        assert reply.links("next") == [directory["new-cert"]]
        authz = reply.json()
        assert authz["identifier"] == {"type": "dns", "value": name}
        assert authz["combinations"] == [[i] for i in range(len(authz["challenges"]))]
        http_challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        key_authz = key.key_authorization(http_challenge["token"])
        assert http_challenge["keyAuthorization"] == key_authz
        files.publish(http_challenge["token"], key_authz)

        reply = await client.post(http_challenge["uri"], {"resource": "challenge", "type": "http-01",
                                                          "keyAuthorization": key_authz})
        assert reply.status == 202, reply.body
        assert reply.json()["uri"] == http_challenge["uri"]
        assert reply.json()["status"] in ("pending", "valid")
        assert reply.links("up") == [authz_url]
        valid = await wait_valid(client, authz_url)
        assert valid.json()["status"] == "valid"
        challenge_get = await client.get(http_challenge["uri"])
        assert challenge_get.status == 202 and challenge_get.json()["status"] == "valid"

        csr, _ = make_csr([name])
        reply = await client.post(directory["new-cert"], {"resource": "new-cert", "csr": b64url(csr)})
        assert reply.status == 201, reply.body
        assert reply.header("content-type") == "application/pkix-cert"
        leaf_der = reply.body
        cert_url = reply.header("location")
        issuer_url = reply.links("up")[0]
        again = await client.get(cert_url)
        assert again.status == 200 and again.body == leaf_der
        issuer = await client.get(issuer_url)
        assert issuer.status == 200 and issuer.header("content-type") == "application/pkix-cert"
        assert issuer.links("up") == []
        leaf = verify_chain(leaf_der, [issuer.body], pebble.root_pem(), name)
        assert certificate_names(leaf) == {name}
        orders = running.context.upstream.request_counts["newOrder"]
        assert orders == 1, "a single-name certificate costs exactly one upstream order"
        spent = [e["orders"] for e in events if "orders" in e and "certificate" in e]
        assert spent == [1], "the gateway logs the orders each certificate cost"
    finally:
        globalLogPublisher.removeObserver(events.append)
        await http01.stopListening()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_unknown_key_is_refused_with_its_thumbprint(tmp_path, pebble):
    """
    A correctly signed request by a key not in the store gets 403
    unauthorized naming the thumbprint, and nothing reaches the upstream.
    """
    stored = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    stranger = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    running, base = await start_gateway(tmp_path, pebble, [stored])
    try:
        client = V1TestClient(base, stranger)
        directory = await client.directory()
        before = sum(running.context.upstream.request_counts.values())
        reply = await client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "x.example.test"}})
        assert reply.status == 403
        problem = reply.json()
        assert problem["type"] == "urn:acme:error:unauthorized"
        assert stranger.thumbprint in problem["detail"]
        assert reply.header("content-type") == "application/problem+json"
        assert sum(running.context.upstream.request_counts.values()) == before
    finally:
        await running.stop()
