"""
Key change and the account lifecycle through the gateway, in process, in
front of a real Pebble: every change must happen at the CA, never only in
the gateway.

The key-change request is made by hand in Boulder's v1 form (MAPPING.md
§1.6): the outer JWS, signed by the old key, carries the inner JWS,
signed by the new key with its ``jwk``, over ``{"account": <registration
URL>, "newKey": <new JWK>}``, plus ``"resource": "key-change"``.  The new
key reaches the key store the way an operator puts it there: ``acme-gateway
keys import``.
"""

from __future__ import annotations

import os

import attrs
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.process import serve
from gateway.process.wiring import ServeConfig
from gateway.process.cli import main
from gateway.keys.jose import AccountKey, sign_flattened
from gateway.keys.keystore import KeyStore
from gateway.upstream.errors import UpstreamProblem
from tests.support.legacy import off_reactor
from tests.support.v1_client import V1TestClient

pytestmark = pytest.mark.integration


def write_key(path: str, key: AccountKey) -> str:
    data = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    return path


@attrs.frozen
class Setup:
    """
    A key store holding the old account key (RSA), and a new key (EC P-256)
    kept elsewhere (``new_path``) until a test imports it.
    """

    workdir: str
    pebble: object
    keys_dir: str
    old: AccountKey
    new: AccountKey
    new_path: str


@pytest.fixture
def setup(tmp_path, pebble) -> Setup:
    old = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    new = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    keys_dir = str(tmp_path / "keys")
    write_key(os.path.join(keys_dir, "old.pem"), old)
    new_path = write_key(str(tmp_path / "elsewhere" / "new.pem"), new)
    return Setup(str(tmp_path), pebble, keys_dir, old, new, new_path)


async def start(setup: Setup):
    """
    The gateway on the keys in ``setup.keys_dir`` (loaded as at start-up),
    in front of the session's Pebble; its base URL.
    """
    from twisted.internet import reactor

    config = ServeConfig(
        upstream=setup.pebble.directory_url, keys=setup.keys_dir,
        upstream_ca_bundle=setup.pebble.ca_bundle,
        state=os.path.join(setup.workdir, "state.sqlite3"), listen="tcp:0:interface=127.0.0.1")
    running = await serve.start(reactor, config, KeyStore.load(setup.keys_dir))
    return running, f"http://127.0.0.1:{running.port.getHost().port}"


def key_change_payload(new: AccountKey, registration_url: str) -> dict:
    inner = sign_flattened(new, {"account": registration_url, "newKey": new.public_jwk_json},
                           {"jwk": new.public_jwk_json})
    return dict(inner, resource="key-change")


async def register(base: str, key: AccountKey) -> tuple:
    client = V1TestClient(base, key)
    directory = await client.directory()
    reply = await client.post(directory["new-reg"], {
        "resource": "new-reg", "contact": ["mailto:old@example.test"]})
    assert reply.status == 201, reply.body
    return client, directory, reply.header("location")


@pytest_twisted.ensureDeferred
async def test_key_change_with_the_new_key_imported(setup):
    """
    With the new key imported (``keys import``) before the gateway starts,
    a v1 key-change is performed at Pebble: Pebble's account is then found
    only by the new key, and the gateway serves the registration under it
    and refuses the old key.
    """
    old, new = setup.old, setup.new
    imported = await off_reactor(main, ["keys", "import", setup.new_path, "--keys", setup.keys_dir])
    assert imported == 0
    running, base = await start(setup)
    try:
        upstream = running.context.upstream
        client, directory, registration_url = await register(base, old)
        before = await upstream.find_account(old)
        assert before is not None

        reply = await client.post(directory["key-change"], key_change_payload(new, registration_url))
        assert reply.status == 200, reply.body
        assert reply.json()["key"] == new.public_jwk_json

        after = await upstream.find_account(new)
        assert after is not None and after.url == before.url
        assert await upstream.find_account(old) is None

        refused = await client.post(registration_url, {"resource": "reg"})
        assert refused.status == 403 and refused.json()["type"] == "urn:acme:error:unauthorized"
        served = await V1TestClient(base, new).post(registration_url, {"resource": "reg"})
        assert served.status == 202, served.body
        assert served.json()["key"] == new.public_jwk_json
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_key_change_without_the_new_key_changes_nothing(setup):
    """
    Without the new private key the gateway cannot sign the upstream
    rollover: a clear 403 saying to import the key first, and nothing
    changes, at Pebble (the old key still finds the account, the new one
    none) or in the gateway (the old key is still served).
    """
    old, new = setup.old, setup.new
    running, base = await start(setup)
    try:
        upstream = running.context.upstream
        client, directory, registration_url = await register(base, old)
        before = await upstream.find_account(old)

        reply = await client.post(directory["key-change"], key_change_payload(new, registration_url))
        assert reply.status == 403, reply.body
        problem = reply.json()
        assert problem["type"] == "urn:acme:error:unauthorized"
        assert new.thumbprint in problem["detail"] and "import the new key" in problem["detail"]

        assert (await upstream.find_account(old)).url == before.url
        assert await upstream.find_account(new) is None
        still = await client.post(registration_url, {"resource": "reg"})
        assert still.status == 202, still.body
        assert still.json()["key"] == old.public_jwk_json
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_contact_update_and_deactivations_reach_the_ca(setup):
    """
    A contact update, an authorization deactivation and an account
    deactivation are each made at Pebble; afterwards the gateway refuses
    the key with Boulder's "Registration is not valid" 403.
    """
    old = setup.old
    running, base = await start(setup)
    try:
        upstream = running.context.upstream
        client, directory, registration_url = await register(base, old)
        account = await upstream.find_account(old)

        updated = await client.post(registration_url, {
            "resource": "reg", "contact": ["mailto:new@example.test"]})
        assert updated.status == 202, updated.body
        assert updated.json()["contact"] == ["mailto:new@example.test"]
        assert list((await upstream.read_account(account)).contact) == ["mailto:new@example.test"]

        authz = await client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "lifecycle.example.test"}})
        assert authz.status == 201, authz.body
        authz_url = authz.header("location")
        deactivated = await client.post(authz_url, {"resource": "authz", "status": "deactivated"})
        assert deactivated.status == 200, deactivated.body
        assert deactivated.json()["status"] == "deactivated"
        record = await running.store.authorization_by_id(authz_url.rsplit("/", 1)[1])
        assert (await upstream.get_authorization(account, record.upstream_url)).status == "deactivated"

        gone = await client.post(registration_url, {"resource": "reg", "status": "deactivated"})
        assert gone.status == 200, gone.body
        assert gone.json()["status"] == "deactivated"
        with pytest.raises(UpstreamProblem) as refused_upstream:
            await upstream.read_account(account)
        assert refused_upstream.value.code == "unauthorized"
        assert "deactivated" in refused_upstream.value.detail

        refused = await client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "again.example.test"}})
        assert refused.status == 403, refused.body
        assert refused.json()["detail"] == "Registration is not valid, has status 'deactivated'"
    finally:
        await running.stop()
