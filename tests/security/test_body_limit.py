"""
The body size limit of the v1 port (`gateway.v1.limits`), on raw HTTP/1.1
connections to the production site, and the ``--max-body`` flag.

twisted.web buffers whole bodies before a resource runs (to a temporary
file above 100 kB), so the limit must hold while the body arrives: refused
from ``Content-Length`` before any of it is read, or the moment a chunked
body passes the limit, and never buffered beyond it.
"""

from __future__ import annotations

import pytest

from gateway.process import cli
from gateway.process.config import Layers, use_layers
from gateway.v1.limits import DEFAULT_MAX_BODY, BoundedRequest, V1Site
from tests.security.harness import KEY, Harness, assert_v1_problem
from tests.support.v1_signing import sign_v1

HEAD = b"POST /acme/new-reg HTTP/1.1\r\nHost: gateway.test\r\n"


def test_announced_length_refused_before_the_body():
    """
    A ``Content-Length`` above the limit gets the 413 problem (with a nonce)
    as soon as the headers are in, even with ``Expect: 100-continue``: no
    ``100 Continue`` invites the body, and the connection is closed.
    """
    harness = Harness.fresh()
    exchange = harness.raw(HEAD + b"Expect: 100-continue\r\nContent-Length: 70000\r\n\r\n")
    assert exchange.closed
    assert b"100 Continue" not in exchange.written
    assert exchange.written.startswith(b"HTTP/1.1 413 ")
    assert_v1_problem(exchange.reply, 413, "malformed", f"the limit is {DEFAULT_MAX_BODY} bytes")
    assert exchange.reply.header("connection") == "close"


def test_chunked_body_cut_off_at_the_limit(monkeypatch):
    """
    A chunked body is refused the moment it passes the limit, and what the
    request buffered never exceeds the limit.
    """
    buffered = []
    original = BoundedRequest.handleContentChunk

    def spy(self, data):
        original(self, data)
        buffered.append(self.content.tell() if self.content is not None else 0)

    monkeypatch.setattr(BoundedRequest, "handleContentChunk", spy)
    harness = Harness.fresh(max_body=1000)
    chunks = (b"100\r\n" + b"x" * 256 + b"\r\n") * 20
    exchange = harness.raw(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert_v1_problem(exchange.reply, 413, "malformed", "the limit is 1000 bytes")
    assert exchange.closed
    assert max(buffered) <= 1000
    assert exchange.written.count(b"HTTP/1.1 ") == 1, "answered once"


def test_body_at_the_limit_is_read():
    """
    A body of exactly the limit reaches the v1 face (which then judges the
    JWS); one byte more is refused.
    """
    harness = Harness.fresh()
    body = sign_v1(KEY, {"resource": "new-reg", "contact": ["mailto:admin@example.test"]}, harness.nonce())
    harness.gateway.face.max_body = len(body)
    exchange = harness.raw(HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert exchange.reply.status == 201, exchange.reply.body
    harness.gateway.face.max_body = len(body) - 1
    exchange = harness.raw(HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert_v1_problem(exchange.reply, 413, "malformed", f"the limit is {len(body) - 1} bytes")


def test_keep_alive_connection_unaffected():
    """
    Requests within the limit on one kept-alive connection are answered one
    after the other, as without the limit.
    """
    harness = Harness.fresh()
    request = b"GET /directory HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
    exchange = harness.raw(request * 2)
    assert exchange.written.count(b"HTTP/1.1 200 ") == 2
    assert not exchange.closed


def test_site_takes_the_face_limit():
    """
    `V1Site` enforces the limit its face was built with, unless told
    another.
    """
    harness = Harness.fresh(max_body=4096)
    assert V1Site(harness.gateway.face).max_body == 4096
    assert V1Site(harness.gateway.face, max_body=10).max_body == 10


def _serve_config(argv, environ=None):
    use_layers(Layers(environ=environ or {}))
    parser = cli.build_parser()
    return cli.serve_config(parser, parser.parse_args(argv))


@pytest.fixture
def serve_args(tmp_path):
    (tmp_path / "keys").mkdir()
    return ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]


def test_max_body_flag_and_environment(serve_args):
    """
    ``--max-body BYTES`` (or ``ACME_GATEWAY_MAX_BODY``) sets the limit; the
    default is 64 KiB.
    """
    assert _serve_config(serve_args).max_body == 64 * 1024 == DEFAULT_MAX_BODY
    assert _serve_config(serve_args + ["--max-body", "8192"]).max_body == 8192
    assert _serve_config(serve_args, {"ACME_GATEWAY_MAX_BODY": "16384"}).max_body == 16384


@pytest.mark.parametrize("value", ["0", "-1", "64k", "lots"])
def test_max_body_bad_values(serve_args, capsys, value):
    """
    A limit that is not a positive number of bytes fails at start-up, naming
    the flag.
    """
    with pytest.raises(SystemExit):
        _serve_config(serve_args + ["--max-body", value])
    assert "--max-body: expected a positive number of bytes" in capsys.readouterr().err
