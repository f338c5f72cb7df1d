"""
`gateway.v1.limits` at its edges (issue 21): `posted_body` — a body of
exactly ``max_body`` bytes is read, one more is refused (from
``Content-Length`` before reading, or as read, never reading more than one
byte past the limit), a bad ``Content-Length`` and a missing body are
``malformed`` — and `V1Site.refusal`, the listener's 503, 413 and 408 as v1
problem documents with a nonce the face accepts.
"""

from __future__ import annotations

import io
import json
from typing import Optional

import pytest

from gateway.process.testing import build_test_gateway
from gateway.v1.limits import V1Site, posted_body, too_large
from gateway.v1.problems import V1Problem
from tests.test_v1_face import KEY


class _Posted:
    """What `posted_body` reads of a request: a header and the body's file."""

    def __init__(self, body: Optional[bytes], length: Optional[bytes] = None):
        self.content = None if body is None else io.BytesIO(body)
        self.length = length

    def getHeader(self, name: bytes) -> Optional[bytes]:
        return self.length if name == b"content-length" else None


def _refusal(request: _Posted, max_body: int) -> V1Problem:
    with pytest.raises(V1Problem) as raised:
        posted_body(request, max_body)
    return raised.value


@pytest.mark.parametrize("announced", [True, False])
def test_a_body_of_exactly_the_limit_is_read(announced):
    body = b"x" * 100
    request = _Posted(body, b"100" if announced else None)
    assert posted_body(request, 100) == body


def test_an_announced_body_over_the_limit_is_refused_before_it_is_read():
    request = _Posted(b"x" * 101, b"101")
    problem = _refusal(request, 100)
    assert (problem.code, problem.status, problem.detail) == (
        "malformed", 413, "Request body too large: the limit is 100 bytes")
    assert request.content.tell() == 0, "nothing read"


def test_a_body_over_the_limit_without_a_length_is_read_one_byte_past_it_only():
    request = _Posted(b"x" * 500)
    problem = _refusal(request, 100)
    assert (problem.code, problem.status, problem.detail) == (
        "malformed", 413, "Request body too large: the limit is 100 bytes")
    assert request.content.tell() == 101


def test_a_length_that_understates_the_body_does_not_get_it_past_the_limit():
    request = _Posted(b"x" * 101, b"10")
    assert _refusal(request, 100).status == 413


@pytest.mark.parametrize("length", [b"ten", b"", b"1e3"])
def test_a_content_length_that_is_no_number_is_malformed(length):
    problem = _refusal(_Posted(b"{}", length), 100)
    assert (problem.code, problem.status, problem.detail) == ("malformed", 400, "Invalid Content-Length")


@pytest.mark.parametrize("body", [None, b""])
def test_a_post_without_a_body_is_malformed(body):
    problem = _refusal(_Posted(body), 100)
    assert (problem.code, problem.status, problem.detail) == ("malformed", 400, "No body on POST")


def test_too_large_names_the_limit():
    problem = too_large(4096)
    assert problem.to_json() == {"type": "urn:acme:error:malformed", "status": 413,
                                 "detail": "Request body too large: the limit is 4096 bytes"}


def _answer(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize("status, code, retry_after", [
    (503, "serverInternal", "1"),
    (413, "malformed", None),
    (408, "malformed", None),
])
def test_the_listeners_refusals_are_v1_problems_with_a_nonce(status, code, retry_after):
    gateway = build_test_gateway((KEY,))
    raw = V1Site(gateway.face).refusal(status, "the reason")
    answered, headers, problem = _answer(raw)
    assert answered == status
    assert problem == {"type": f"urn:acme:error:{code}", "detail": "the reason", "status": status}
    assert headers["content-type"] == "application/problem+json"
    assert headers["cache-control"] == "public, max-age=0, no-cache"
    assert headers.get("retry-after") == retry_after
    assert gateway.face.nonces.check(headers["replay-nonce"]) is not None
