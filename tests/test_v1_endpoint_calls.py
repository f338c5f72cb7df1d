"""
`gateway.v1.endpoint` on its own (issue 21): what `V1Call.signed` gives an
endpoint (the signer with its address and User-Agent, the payload, the
request's scope filled in), its refusals (a nonce used already, a body
over the limit), and what a `V1Endpoint` answers for a method it lists
but does not implement.
"""

from __future__ import annotations

import io

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from gateway.operations.scope import RequestScope
from gateway.store.sqlite import SQLiteStore
from gateway.v1.endpoint import Unknown, V1Call, V1Endpoint
from gateway.v1.messages import V1URLs
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from tests.support.v1_signing import sign_v1
from tests.test_v1_face import KEY

NEW_AUTHZ = {"resource": "new-authz", "identifier": {"type": "dns", "value": "WWW.Example.TEST"}}


def _call(body: bytes, nonces: NonceIssuer, user_agent=None, max_body=65536, method="POST") -> V1Call:
    request = DummyRequest([b"acme", b"new-authz"])
    request.method = method.encode()
    request.content = io.BytesIO(body)
    request.client = IPv4Address("TCP", "198.51.100.7", 40000)
    if user_agent is not None:
        request.requestHeaders.setRawHeaders(b"user-agent", [user_agent])
    return V1Call(request, method, V1URLs("https://gw.test"), RequestScope(id="r1"), nonces, max_body)


def _nonces() -> NonceIssuer:
    clock = Clock()
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock))


def _done(coroutine):
    """The result of a coroutine that needs no reactor (the inline store answers at once)."""
    outcome = []
    defer.Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    (result,) = outcome
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _signed(call: V1Call, resource_name: str = "new-authz"):
    return _done(call.signed(resource_name))


def test_a_signed_post_gives_the_signer_its_address_user_agent_and_payload():
    nonces = _nonces()
    call = _call(sign_v1(KEY, NEW_AUTHZ, nonces.issue()), nonces, user_agent=b"CertbotACMEClient/0.31.0")
    signer, payload = _signed(call)
    assert payload == NEW_AUTHZ
    assert (signer.thumbprint, signer.address, signer.user_agent) == (
        KEY.thumbprint, "198.51.100.7", "CertbotACMEClient/0.31.0")
    assert signer.jwk.to_json() == KEY.public_jwk_json
    assert (call.scope.thumbprint, call.scope.names) == (KEY.thumbprint, ("www.example.test",))
    assert call.address == "198.51.100.7"


def test_a_client_without_a_user_agent_has_an_empty_one():
    nonces = _nonces()
    signer, _ = _signed(_call(sign_v1(KEY, NEW_AUTHZ, nonces.issue()), nonces))
    assert signer.user_agent == ""


def test_a_nonce_used_already_is_a_bad_nonce():
    nonces = _nonces()
    nonce = nonces.issue()
    _signed(_call(sign_v1(KEY, NEW_AUTHZ, nonce), nonces))
    call = _call(sign_v1(KEY, NEW_AUTHZ, nonce), nonces)
    with pytest.raises(V1Problem) as raised:
        _signed(call)
    assert (raised.value.code, raised.value.status) == ("badNonce", 400)
    # Boulder names the nonce it refused, so a client log shows which one.
    assert raised.value.detail == f"JWS has an invalid anti-replay nonce: {nonce}"
    assert call.scope.thumbprint is None, "nothing is known of a refused request"


def test_a_body_over_the_calls_limit_is_refused():
    nonces = _nonces()
    body = sign_v1(KEY, NEW_AUTHZ, nonces.issue())
    with pytest.raises(V1Problem) as raised:
        _signed(_call(body, nonces, max_body=len(body) - 1))
    assert raised.value.status == 413


class _Listed(V1Endpoint):
    endpoint = "listed"
    methods = ("GET", "POST")


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_method_listed_but_not_implemented_is_a_405_with_allow(method):
    nonces = _nonces()
    call = _call(b"{}", nonces)
    with pytest.raises(V1Problem) as raised:
        _done(getattr(_Listed(), method)(call))
    assert (raised.value.code, raised.value.status, raised.value.headers) == (
        "malformed", 405, {"Allow": "GET, POST"})


def test_an_endpoint_is_never_rendered_on_its_own():
    with pytest.raises(NotImplementedError):
        Unknown().render(DummyRequest([b"x"]))
    assert (Unknown.endpoint, Unknown.methods, Unknown.trailing_slash, Unknown.isLeaf) == (
        "unknown", (), False, True)
