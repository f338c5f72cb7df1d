"""
Build ACME v1 request bodies the way legacy clients did, for tests.

Real v1 clients put ``alg`` and ``jwk`` in the protected header, only in the
unprotected ``header`` (certbot before 0.14 and some Node.js clients, which
protect nothing but the nonce), or in both.  `sign_v1` makes any of the three;
`sign_jws` is the low-level builder for the deliberately broken requests that
rejection tests need (wrong ``alg``, foreign signatures, raw payload bytes).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional, Union

from gateway.keys.jose import AccountKey, b64url, encode_payload, sign_flattened

#: The header placements `sign_v1` knows.
JWK_PLACEMENTS = ("protected", "unprotected", "both")


def _encode_header(header: Mapping[str, Any]) -> str:
    return b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def sign_jws(
    sign: Callable[[bytes], bytes],
    protected: Mapping[str, Any],
    payload: Union[dict, bytes, None],
    header: Optional[Mapping[str, Any]] = None,
) -> dict:
    """
    A flattened JWS with exactly the headers given (nothing is added), signed
    by ``sign`` over ``protected.payload``.

    :param sign: maps the signing input to the raw signature bytes; for
        instance ``key.sign``, or ``lambda data: b""`` for ``alg: none``.
    :param payload: a JSON object, or raw bytes used as they are (for
        payloads that are not JSON at all).
    :param header: the unprotected header, left out when ``None``.
    """
    protected_b64 = _encode_header(protected)
    raw = payload if isinstance(payload, bytes) else encode_payload(payload)
    payload_b64 = b64url(raw)
    jws = {
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": b64url(sign(f"{protected_b64}.{payload_b64}".encode("ascii"))),
    }
    if header is not None:
        jws["header"] = dict(header)
    return jws


def to_body(jws: Mapping[str, Any]) -> bytes:
    """
    Serialize a JWS object into request body bytes.
    """
    return json.dumps(jws).encode("utf-8")


def sign_v1(
    key: AccountKey,
    payload: dict,
    nonce: Optional[str],
    *,
    jwk_in: str = "protected",
    extra_protected: Optional[dict] = None,
) -> bytes:
    """
    The body of a v1 POST signed by ``key``.

    :param payload: the request payload, ``resource`` included (nothing is
        added to it).
    :param nonce: the gateway nonce to sign, or ``None`` to send none.
    :param jwk_in: where ``alg`` and ``jwk`` go: ``"protected"`` (the modern
        layout, built with `gateway.keys.jose.sign_flattened`), ``"unprotected"``
        (only the nonce is protected, as certbot < 0.14 did) or ``"both"``.
    :param extra_protected: more protected header members, such as a ``url``
        a v1 server must ignore.
    """
    if jwk_in not in JWK_PLACEMENTS:
        raise ValueError(f"jwk_in must be one of {JWK_PLACEMENTS}, not {jwk_in!r}")
    key_members = {"alg": key.algorithm.name, "jwk": key.public_jwk_json}
    protected: dict = {}
    if nonce is not None:
        protected["nonce"] = nonce
    protected.update(extra_protected or {})
    if jwk_in == "protected":
        protected["jwk"] = key.public_jwk_json
        return to_body(sign_flattened(key, payload, protected))
    if jwk_in == "both":
        protected.update(key_members)
    return to_body(sign_jws(key.sign, protected, payload, header=key_members))
