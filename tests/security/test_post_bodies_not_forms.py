"""
A POST's body is a JWS document, never form data: the production site
(`gateway.web.BoundedRequest`) does not look for a form, which cost every
POST a parse of its ``Content-Type`` with the email package (about 30 µs,
issue 15), and answered a multipart body it could not parse with a bare
400 and a closed connection instead of the face's problem document.
"""

from __future__ import annotations

import sys

import pytest
from twisted.web import http

from gateway.web import BoundedRequest

from tests.security.harness import KEY, Harness, assert_v1_problem
from tests.support.v1_signing import sign_v1

HEAD = b"POST /acme/new-reg HTTP/1.1\r\nHost: gateway.test\r\n"


@pytest.fixture
def parsed(monkeypatch):
    """
    The ``Content-Type`` values Twisted parses, looking for a form, for
    requests to the gateway's site (not the FakeCA's, which the gateway's
    upstream requests reach through a plain Twisted site).
    """
    seen = []
    parse = http._parseContentType

    def counting(line):
        if isinstance(sys._getframe(1).f_locals.get("self"), BoundedRequest):
            seen.append(line)
        return parse(line)

    monkeypatch.setattr(http, "_parseContentType", counting)
    return seen


def _post(harness: Harness, content_type: bytes, body: bytes):
    return harness.raw(HEAD + b"Content-Type: " + content_type
                       + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


def test_a_registration_parses_no_content_type(parsed):
    """
    A new-reg with a JWS body, as clients send it, is answered as before
    without a parse of its ``Content-Type``.
    """
    harness = Harness.fresh()
    body = sign_v1(KEY, {"resource": "new-reg", "contact": ["mailto:admin@example.test"]},
                   harness.nonce())
    exchange = _post(harness, b"application/jose+json", body)
    assert exchange.reply.status == 201, exchange.reply.body
    assert parsed == []


@pytest.mark.parametrize("content_type, body", [
    (b"multipart/form-data; boundary=x", b"{}"),
    (b"application/x-www-form-urlencoded", b"resource=new-reg"),
])
def test_a_form_body_is_a_malformed_request(parsed, content_type, body):
    """
    A body sent as a form is what any other body that is no JWS is: a v1
    ``malformed`` problem document (a multipart one got a bare 400).
    """
    exchange = _post(Harness.fresh(), content_type, body)
    assert_v1_problem(exchange.reply, 400, "malformed")
    assert parsed == []
