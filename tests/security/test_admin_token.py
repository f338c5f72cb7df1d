"""
The admin listener's bearer token, ``--admin-token-file`` (issue 18 item 9).

The admin listener shows names, client addresses and thumbprints, and was
reached without authentication wherever it was given as ``tcp:PORT``
(every interface), as in the Kubernetes config.  With a token file every
page but ``/healthz`` (liveness probes carry no token) asks for
``Authorization: Bearer TOKEN``; ``acme-gateway healthcheck`` sends it; a
listener beyond loopback without a token is warned about at start-up.
"""

from __future__ import annotations

import http.server
import threading

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from treq.testing import StubTreq

from gateway.keys.jose import AccountKey
from gateway.operations.probe import probe
from gateway.process import cli, serve
from gateway.process.config import Layers, use_layers
from gateway.process.testing import build_test_gateway

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
TOKEN = "Zm9vYmFyLXNlY3JldC10b2tlbg"
GUARDED = ("/", "/readyz", "/readyz?upstream=1", "/metrics", "/status", "/status.json")


def admin_client(token):
    gateway = build_test_gateway([KEY])
    admin = attrs.evolve(gateway.gateway.admin, token=token)
    return StubTreq(admin.resource())


def fetch(client, path, headers=None):
    replies = []
    client.get("http://127.0.0.1" + path, headers=headers).addBoth(replies.append)
    client.flush()
    (response,) = replies
    body = []
    client.content(response).addBoth(body.append)
    client.flush()
    return response, body[0]


@pytest.mark.parametrize("path", GUARDED)
def test_pages_need_the_token(path):
    client = admin_client(TOKEN)
    for headers in (None, {"Authorization": ["Bearer wrong"]},
                    {"Authorization": [TOKEN]}, {"Authorization": ["Bearer " + TOKEN + "x"]}):
        response, body = fetch(client, path, headers)
        assert response.code == 401, (headers, response.code)
        assert response.headers.getRawHeaders("www-authenticate") == [
            'Bearer realm="acme-gateway admin"']
        assert b"admin token" in body and b"thumbprint" not in body.lower()
    response, _ = fetch(client, path, {"Authorization": ["Bearer " + TOKEN]})
    assert response.code == 200, path


def test_healthz_needs_none():
    response, body = fetch(admin_client(TOKEN), "/healthz")
    assert response.code == 200 and body == b"ok\n"


@pytest.mark.parametrize("path", GUARDED)
def test_without_a_token_file_pages_are_open(path):
    response, _ = fetch(admin_client(None), path)
    assert response.code == 200


# -- the flag -------------------------------------------------------------------------


def _parse(argv, environ=None):
    use_layers(Layers(environ=environ or {}))
    parser = cli.build_parser()
    return parser, parser.parse_args(argv)


@pytest.fixture
def serve_args(tmp_path):
    (tmp_path / "keys").mkdir()
    return ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]


def test_token_file_read_at_start_up(serve_args, tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    parser, args = _parse(serve_args + ["--admin-token-file", str(tmp_path / "token")])
    config = cli.serve_config(parser, args)
    assert config.admin_token == TOKEN
    assert TOKEN not in repr(config)
    parser, args = _parse(serve_args, {"ACME_GATEWAY_ADMIN_TOKEN_FILE": str(tmp_path / "token")})
    assert cli.serve_config(parser, args).admin_token == TOKEN
    parser, args = _parse(serve_args)
    assert cli.serve_config(parser, args).admin_token is None


@pytest.mark.parametrize("content, expected", [
    (None, "cannot read"), ("", "holds no token"), ("  \n", "holds no token"),
    ("two words", "holds no token"),
])
def test_unusable_token_file_fails_start_up(serve_args, tmp_path, capsys, content, expected):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    parser, args = _parse(serve_args + ["--admin-token-file", str(path)])
    with pytest.raises(SystemExit):
        cli.serve_config(parser, args)
    error = capsys.readouterr().err
    assert "--admin-token-file: " in error and expected in error, error


# -- healthcheck -----------------------------------------------------------------------


@pytest.fixture
def token_server():
    """
    A loopback HTTP server answering 200 only to the right bearer token.
    """
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer " + TOKEN
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"ready\n" if ok else b"no\n")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/readyz"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_probe_sends_the_token(token_server):
    assert probe(token_server, token=TOKEN) == (True, "ready\n")
    assert probe(token_server)[0] is False


def test_healthcheck_command_reads_the_token_file(token_server, tmp_path, capsys):
    (tmp_path / "token").write_text(TOKEN)
    parser, args = _parse(["healthcheck", "--url", token_server,
                           "--admin-token-file", str(tmp_path / "token")])
    assert cli.run_healthcheck(parser, args) == 0
    parser, args = _parse(["healthcheck", "--url", token_server])
    assert cli.run_healthcheck(parser, args) == 1


# -- the warning ---------------------------------------------------------------------


@attrs.define
class _Port:
    host: str

    def getHost(self):
        return attrs.make_class("Address", ["host"])(self.host)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
])
def test_listener_beyond_loopback_is_noticed(host, loopback):
    assert serve._on_loopback(_Port(host)) is loopback
