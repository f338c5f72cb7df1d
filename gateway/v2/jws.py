"""
Verify an ACME v2 JWS as Boulder's v2 front end did for draft-era clients,
with what the v1 face shares (`gateway.v1.jws`: the flattened form, bounded
JSON, the key and algorithm rules, the signature).

The order of checks: the body is a flattened JWS; exactly one of ``jwk``
and ``kid``; ``url`` is the URL the request was sent to; the signature
verifies with the ``jwk``, or with one of the keys the ``kid`` may stand
for (the caller finds them: `gateway.translate.orders.keys_for_kid`); then
the nonce, checked after the signature so that a forged request cannot
burn a client's nonce; then the payload, a JSON object or empty
(POST-as-GET).

Nonces are the v1 face's rule (single use, issued by the gateway) for
every request that changes something.  A POST-as-GET of what a plain
``GET`` also reads (an authorization, a challenge, an order, a
certificate) is served whatever its nonce: the draft-era clients this
face is for read with unauthenticated ``GET``s, so the nonce guards
nothing there, and a client without ``badNonce`` retry loses nothing to a
gateway restart between its nonce and its read.

Whatever the bytes, only `gateway.v1.problems.V1Problem` (the shared
checks) or `gateway.v2.problems.V2Problem` leave.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, Sequence, Tuple, Union

import attrs
import josepy

from gateway.keys.jose import thumbprint
from gateway.v1.jws import JSONObject, ParsedJWS, decode_json_payload, parse_jws, verify_with_jwk
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from gateway.v2.problems import V2Problem

#: A v2 payload: a JSON object, or ``""`` for POST-as-GET.
V2Payload = Union[JSONObject, str]


class CandidateKey(Protocol):
    """
    What a key a ``kid`` may stand for offers: its thumbprint and public
    JWK (`gateway.translate.orders.KnownKey` is one).
    """

    @property
    def thumbprint(self) -> str: ...

    @property
    def jwk(self) -> Mapping[str, Any]: ...


@attrs.frozen
class SignedRequest:
    """
    A v2 request whose JWS structure checked out, before its key.

    :ivar kid: the ``kid`` header, when the request names an account.
    :ivar jwk: the ``jwk`` header, when it carries its key.
    """

    parsed: ParsedJWS
    kid: Optional[str]
    jwk: Optional[JSONObject]

    @property
    def post_as_get(self) -> bool:
        return self.parsed.payload == b""


def parse(body: bytes, url: str) -> SignedRequest:
    """
    The body as a flattened JWS with one of ``jwk`` and ``kid``, signed for
    ``url``.

    :raises V1Problem, V2Problem: ``malformed``.
    """
    parsed = parse_jws(body)
    header = parsed.header
    if "jwk" in header and "kid" in header:
        raise V2Problem.malformed("jwk and kid header fields are mutually exclusive")
    if "jwk" not in header and "kid" not in header:
        raise V2Problem.malformed("No embedded JWK or key ID in JWS header")
    kid = header.get("kid")
    if "kid" in header and (not isinstance(kid, str) or not kid):
        raise V2Problem.malformed("JWS key ID is not a string")
    jwk = header.get("jwk")
    if "jwk" in header and not isinstance(jwk, dict):
        raise V2Problem.malformed("JWK in JWS header is not a JSON object")
    signed_url = parsed.protected.get("url")
    if not isinstance(signed_url, str) or not signed_url:
        raise V2Problem.malformed("JWS header parameter 'url' required")
    if signed_url != url:
        raise V2Problem.malformed(
            f"JWS header parameter 'url' incorrect. Expected {url!r} got {signed_url!r}")
    return SignedRequest(parsed, kid if "kid" in header else None, jwk)


def verify(signed: SignedRequest, candidates: Sequence[CandidateKey] = ()) -> Tuple[josepy.JWK, str]:
    """
    The key that signed: the ``jwk``, or the first of ``candidates`` (the
    keys the ``kid`` may stand for) the signature verifies with.

    :return: the signer's public JWK and its thumbprint.
    :raises V1Problem: ``malformed`` for a ``jwk`` that is unusable or does
        not verify.
    :raises V2Problem: ``accountDoesNotExist`` when no key the ``kid`` may
        stand for verifies.
    """
    if signed.jwk is not None:
        jwk, _ = verify_with_jwk(signed.parsed, signed.jwk)
        return jwk, thumbprint(jwk)
    for candidate in candidates:
        try:
            jwk, _ = verify_with_jwk(signed.parsed, dict(candidate.jwk))
        except V1Problem:
            continue
        return jwk, candidate.thumbprint
    raise V2Problem.account_does_not_exist(
        f"No account the gateway knows is key ID {signed.kid!r} with a key that verifies this "
        f"request: send newAccount signed with the account key, or put the key in the "
        f"gateway's key store")


async def redeem_nonce(signed: SignedRequest, nonces: NonceIssuer, required: bool) -> None:
    """
    Use up the request's nonce; without a redeemable one, refuse it when
    ``required`` (everything but a read that a plain ``GET`` may make).

    :raises V2Problem: ``badNonce``.
    """
    nonce = signed.parsed.protected.get("nonce")
    # Redeemed at the store: once across every process of the state.
    redeemed = isinstance(nonce, str) and bool(nonce) and await nonces.redeem(nonce)
    if redeemed or not required:
        return
    if nonce is None or nonce == "":
        raise V2Problem.bad_nonce("JWS has no anti-replay nonce")
    raise V2Problem.bad_nonce(f"JWS has an invalid anti-replay nonce: {str(nonce)[:100]!r}")


def payload(signed: SignedRequest) -> V2Payload:
    """
    The payload: ``""`` for POST-as-GET, else a JSON object.

    :raises V1Problem: ``malformed``.
    """
    if signed.post_as_get:
        return ""
    return decode_json_payload(signed.parsed.payload)
