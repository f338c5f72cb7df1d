"""
Key store hygiene: private key files that their group or others may read
are refused (with the command that fixes them) unless the operator says
otherwise, and private key material never leaves the gateway -- not in its
logs, its error documents, its listings, its admin pages nor its SQLite
database, which holds thumbprints and public keys only.

Tests run as root, who can read any file: the mode check is a pure check of
permission bits, so it holds all the same.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
from pathlib import Path

import josepy
import pytest
import pytest_twisted
import treq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import server

from gateway.process import cli
from gateway.process import serve
from gateway.process.wiring import ServeConfig
from gateway.process.config import Layers, use_layers
from gateway.keys.jose import AccountKey, b64url, sign_flattened
from gateway.keys.keystore import KeyStore, format_listing, load_key_file
from gateway.operations.logs import event_as_json, event_as_text
from gateway.process.testing import FakeCA
from tests.security.harness import make_csr
from tests.support.v1_client import V1TestClient
from tests.support.v1_signing import sign_jws, to_body

PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL


def pem(key, private_format=PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())


def private_jwk(key) -> dict:
    return josepy.JWK.load(pem(key)).to_json()


def write_key(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def secrets_of(key) -> list:
    """
    Strings that would reveal ``key``: every base64 line of its PEM bodies
    (PKCS#8 and traditional), its JWK private members, and its private
    scalar or exponent in decimal and hex.
    """
    jwk = private_jwk(key)
    # A PEM line lying wholly inside the public modulus or point is public
    # (and shows up, base64url-encoded, in every registration's "key").
    public = [jwk[m] for m in ("n", "e", "x", "y") if m in jwk]
    found = []
    for private_format in (PKCS8, TRADITIONAL):
        for line in pem(key, private_format).decode().splitlines():
            urlsafe = line.replace("+", "-").replace("/", "_")
            if line and not line.startswith("-----") and not any(urlsafe in p for p in public):
                found.append(line)
    found += [jwk[m] for m in ("d", "p", "q", "dp", "dq", "qi") if m in jwk]
    numbers = key.private_numbers()
    secret = numbers.d if isinstance(key, rsa.RSAPrivateKey) else numbers.private_value
    found += [str(secret), format(secret, "x")]
    der = key.private_bytes(serialization.Encoding.DER, PKCS8, serialization.NoEncryption())
    found.append(base64.b64encode(der).decode()[:40])
    return found


def assert_no_secret(text, secrets: list, where: str) -> None:
    """
    None of ``secrets`` (see `secrets_of`) is in ``text``.
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    for secret in secrets:
        assert secret not in text, f"private key material in {where}"


# -- file modes ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o444, 0o440, 0o601])
def test_shared_key_file_refused(tmp_path, mode):
    """
    A private key file with any group or other permission bit is refused by
    name, with the mode, the ``chmod 600`` that fixes it and the override;
    the key is not loaded.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "account.pem", pem(key), mode)
    store = KeyStore.load(str(tmp_path))
    assert len(store) == 0
    (problem,) = store.problems
    assert problem.path == str(path)
    assert f"mode {mode:04o}" in problem.reason
    assert f"chmod 600 {path}" in problem.reason
    assert "--allow-shared-key-files" in problem.reason
    with pytest.raises(ValueError, match="chmod 600"):
        load_key_file(str(path))


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_key_file_loaded(tmp_path, mode):
    """
    Owner-only key files load.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    write_key(tmp_path / "account.pem", pem(key), mode)
    store = KeyStore.load(str(tmp_path))
    assert [loaded.key.thumbprint for loaded in store.loaded] == [AccountKey.from_private_key(key).thumbprint]
    assert store.problems == ()


def test_override_loads_shared_files(tmp_path):
    """
    With ``allow_shared`` (``--allow-shared-key-files``) group-readable key
    files load.
    """
    key = rsa.generate_private_key(65537, 2048)
    write_key(tmp_path / "private_key.json", json.dumps(private_jwk(key)).encode(), 0o440)
    assert len(KeyStore.load(str(tmp_path))) == 0
    store = KeyStore.load(str(tmp_path), allow_shared=True)
    assert len(store) == 1 and store.problems == ()
    assert load_key_file(str(tmp_path / "private_key.json"), allow_shared=True) is not None


def test_kubernetes_secret_mount(tmp_path):
    """
    A Kubernetes Secret volume with ``defaultMode: 0440``: files are
    symlinks through ``..data`` to 0440 files.  Refused by default, named by
    the symlink the operator sees; loaded with the override.
    """
    stamp = tmp_path / "..2024_01_01_00_00_00.000000000"
    key = ec.generate_private_key(ec.SECP384R1())
    write_key(stamp / "account.key", pem(key), 0o440)
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "account.key").symlink_to(Path("..data") / "account.key")
    store = KeyStore.load(str(tmp_path))
    (problem,) = store.problems
    assert problem.path == str(tmp_path / "account.key")
    assert "mode 0440" in problem.reason
    assert len(KeyStore.load(str(tmp_path), allow_shared=True)) == 1


def test_public_files_of_client_layouts_unaffected(tmp_path):
    """
    Only files holding a private key are judged: certbot's world-readable
    ``regr.json`` and ``meta.json`` beside a 0400 ``private_key.json`` are
    skipped as before, not reported.
    """
    key = rsa.generate_private_key(65537, 2048)
    account = tmp_path / "accounts" / "acme.example" / "directory" / "abc"
    write_key(account / "private_key.json", json.dumps(private_jwk(key)).encode(), 0o400)
    write_key(account / "regr.json", b'{"body": {}, "uri": "https://acme.example/acme/reg/1"}', 0o644)
    write_key(account / "meta.json", b'{"creation_host": "h"}', 0o644)
    store = KeyStore.load(str(tmp_path))
    assert len(store) == 1
    assert store.problems == ()
    assert len(store.skipped) == 2


def _keys_list(argv, capsys, environ=None, code=0) -> str:
    use_layers(Layers(environ=environ or {}))
    parser = cli.build_parser()
    assert cli.run_keys_list(parser, parser.parse_args(argv)) == code
    return capsys.readouterr().out


def test_keys_list_shows_the_refusal(tmp_path, capsys):
    """
    ``acme-gateway keys list`` shows a shared key file as an error with the
    fix; with ``--allow-shared-key-files`` (or its variable) it lists the
    key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "keys" / "account.pem", pem(key), 0o644)
    thumbprint = AccountKey.from_private_key(key).thumbprint
    keys = str(tmp_path / "keys")
    # The refused file leaves nothing usable: exit status 1.
    text = _keys_list(["keys", "list", "--keys", keys], capsys, code=1)
    assert f"error: {path}: mode 0644" in text and f"chmod 600 {path}" in text
    assert thumbprint not in text
    assert thumbprint in _keys_list(["keys", "list", "--keys", keys, "--allow-shared-key-files"], capsys)
    assert thumbprint in _keys_list(["keys", "list", "--keys", keys], capsys,
                                    {"ACME_GATEWAY_ALLOW_SHARED_KEY_FILES": "true"})
    assert_no_secret(text, secrets_of(key), "keys list")


def test_serve_flag_and_startup_report(tmp_path):
    """
    ``serve --allow-shared-key-files`` (or ``ACME_GATEWAY_ALLOW_SHARED_KEY_FILES``)
    reaches the configuration; without it the start-up report names the
    refused file and the fix.
    """
    (tmp_path / "keys").mkdir()
    base = ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]

    def config(argv, environ=None):
        use_layers(Layers(environ=environ or {}))
        parser = cli.build_parser()
        return cli.serve_config(parser, parser.parse_args(argv))

    assert config(base).allow_shared_key_files is False
    assert config(base + ["--allow-shared-key-files"]).allow_shared_key_files is True
    assert config(base + ["--allow-shared-key-files", "false"]).allow_shared_key_files is False
    assert config(base, {"ACME_GATEWAY_ALLOW_SHARED_KEY_FILES": "1"}).allow_shared_key_files is True

    key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "keys" / "account.pem", pem(key), 0o640)
    out = io.StringIO()
    serve.report_key_store(KeyStore.load(str(tmp_path / "keys")), out=out)
    assert f"error: {path}: mode 0640" in out.getvalue()
    assert "chmod 600" in out.getvalue()


# -- no key material anywhere ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_no_key_material_in_logs_errors_or_database(tmp_path):
    """
    A real gateway (`gateway.process.wiring.start`: SQLite state, the production
    site, a loopback listener) in front of a `FakeCA`: a whole issuance and
    revocation, plus requests that put private key material in front of it
    (a JWS header carrying the private JWK, a key-change inner JWS the same,
    a key whose file is refused).  No private key material of any of the
    keys appears in any log event (as JSON, as text, or its raw fields), any
    response, the key store listings, the admin pages, or the bytes of the
    database and its journal.
    """
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    shared_key = ec.generate_private_key(ec.SECP384R1())
    secrets = [secret for key in (rsa_key, ec_key, shared_key) for secret in secrets_of(key)]
    keys_dir = tmp_path / "keys"
    write_key(keys_dir / "certbot" / "private_key.json", json.dumps(private_jwk(rsa_key)).encode(), 0o400)
    write_key(keys_dir / "account.pem", pem(ec_key, TRADITIONAL), 0o600)
    write_key(keys_dir / "shared.pem", pem(shared_key), 0o644)

    events: list = []
    globalLogPublisher.addObserver(events.append)
    ca = FakeCA()
    ca_port = reactor.listenTCP(0, server.Site(ca), interface="127.0.0.1")
    ca.base_url = f"http://127.0.0.1:{ca_port.getHost().port}"
    state = tmp_path / "state.sqlite3"
    config = ServeConfig(
        upstream=ca.directory_url, keys=str(keys_dir), state=str(state),
        listen="tcp:0:interface=127.0.0.1", admin_listen="tcp:0:interface=127.0.0.1",
    )
    keys = KeyStore.load(config.keys)
    report = io.StringIO()
    serve.report_key_store(keys, out=report)
    cli._log_key_store(keys)
    texts = {"start-up report": report.getvalue(), "keys list": format_listing(keys),
             "key store repr": repr(keys) + repr(keys.loaded) + repr(keys.problems)}
    running = await serve.start(reactor, config, keys)
    responses = []
    try:
        base = f"http://127.0.0.1:{running.port.getHost().port}"
        a = AccountKey.from_private_key(rsa_key)
        client = V1TestClient(base, a)

        async def post(path, payload, key=a, **options):
            url = path if path.startswith("http") else base + path
            reply = await client.post(url, payload, key=key, **options)
            responses.append(reply)
            return reply

        reg = await post("/acme/new-reg", {"resource": "new-reg", "contact": ["mailto:a@example.test"]})
        assert reg.status == 201, reg.body
        authz = await post("/acme/new-authz", {"resource": "new-authz",
                                               "identifier": {"type": "dns", "value": "a.example.test"}})
        assert authz.status == 201, authz.body
        challenge = next(c for c in authz.json()["challenges"] if c["type"] == "http-01")
        answered = await post(challenge["uri"], {"resource": "challenge", "type": "http-01",
                                                 "keyAuthorization": a.key_authorization(challenge["token"])})
        assert answered.status == 202, answered.body
        responses.append(await client.get(authz.header("location")))
        cert = await post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(["a.example.test"]))})
        assert cert.status == 201, cert.body
        responses.append(await client.get(cert.header("location")))
        revoked = await post("/acme/revoke-cert", {"resource": "revoke-cert", "certificate": b64url(cert.body)})
        assert revoked.status == 200, revoked.body

        # Private key material put in front of the gateway.
        nonce = await client.fresh_nonce()
        leaky = sign_jws(a.sign, {"alg": "RS256", "jwk": private_jwk(rsa_key), "nonce": nonce},
                         {"resource": "new-authz", "identifier": {"type": "dns", "value": "b.example.test"}})
        responses.append(await client.get(base + "/directory"))
        reply = await _post_raw(base + "/acme/new-authz", to_body(leaky))
        responses.append(reply)
        assert reply.status == 400
        c = AccountKey.from_private_key(ec_key)
        inner = sign_flattened(c, {"account": reg.header("location"), "newKey": c.public_jwk_json},
                               {"jwk": private_jwk(ec_key)})
        reply = await post("/acme/key-change", dict(inner, resource="key-change"))
        assert reply.status == 400, reply.body
        shared = AccountKey.from_private_key(shared_key)
        reply = await post("/acme/new-reg", {"resource": "new-reg"}, key=shared)
        assert reply.status == 403 and shared.thumbprint in reply.json()["detail"]
        reply = await post("/acme/new-reg", {"resource": "new-reg"}, key=c)
        assert reply.status == 201, reply.body

        admin = f"http://127.0.0.1:{running.admin_port.getHost().port}"
        for path in ("/status", "/metrics", "/healthz", "/readyz"):
            response = await treq.get(admin + path)
            texts[f"admin {path}"] = (await response.content()).decode("latin-1")
    finally:
        await running.stop()
        await ca_port.stopListening()
        globalLogPublisher.removeObserver(events.append)

    assert any(e.get("endpoint") == "new-cert" for e in events), "the access log was captured"
    for event in events:
        text = event_as_json(event) + (event_as_text(event) or "") + formatEvent(event) + repr(event)
        assert_no_secret(text, secrets, f"the log event {formatEvent(event)!r}")
    for reply in responses:
        assert_no_secret(reply.body, secrets, "a v1 response body")
        assert_no_secret(repr(reply.headers), secrets, "v1 response headers")
    for where, text in texts.items():
        assert_no_secret(text, secrets, where)
    database = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(state.name))
    assert_no_secret(database, secrets, "the SQLite database")
    # What the database does hold: the thumbprints and public keys.
    connection = sqlite3.connect(str(state))
    try:
        rows = connection.execute("SELECT thumbprint FROM accounts").fetchall()
    finally:
        connection.close()
    assert {a.thumbprint, c.thumbprint} <= {row[0] for row in rows}
    assert os.stat(state).st_mode & 0o077 == 0


async def _post_raw(url: str, body: bytes):
    from tests.support.v1_client import _reply

    return await _reply(await treq.post(url, data=body))
