"""
Verify a legacy ACME v1 JWS the way Boulder's v1 WFE did (``verifyPOST``).

Legacy clients sign requests that a v2 server would refuse: ``alg`` and
``jwk`` may sit in the unprotected ``header`` (certbot before 0.14, some
Node.js clients), there is no ``url``, and the payload names its endpoint in
``resource``.  The gateway must accept exactly what Boulder accepted, in the
same order of checks (MAPPING §1.1), so that a client sees the same error a
real v1 CA would have given it:

1. the body is a flattened JSON JWS;
2. there is a usable ``jwk`` (not ``kid``), a public RSA or EC key ACME allows;
3. ``alg`` is the one algorithm that fits the key;
4. the signature verifies;
5. the gateway nonce is present, authentic and unexpired (checked after the signature,
   so a forged request cannot burn a client's nonce);
6. the payload is a JSON object whose ``resource`` matches the endpoint.

Everything here treats the request as hostile: whatever the bytes, the only
exception that leaves is a `V1Problem`, and JSON nesting is bounded before
any recursive parser sees it.  Account lookup is not done here; callers look
the thumbprint up.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Dict, Optional, Union, cast

import attrs
import josepy
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.keys.jose import UnsupportedKey, algorithm_for_public_key, b64url_decode, thumbprint
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem

#: Boulder's GoodKey never accepted RSA moduli above 4096 bits, and bigger
#: keys only make verification slower for an attacker's benefit.
MAX_RSA_BITS = 4096

DEFAULT_MAX_DEPTH = 32

#: JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

#: A JSON object as parsed: a JWS, its header, a payload.
JSONObject = Dict[str, Any]

_PARSE_ERROR = "Parse error reading JWS"

# A JSON string.  An unterminated one runs to the end of the text, so that
# every quote starts a match and the atomic group never backtracks: the scan
# stays linear whatever the input (a failing match at every quote of a
# string of escaped quotes would be quadratic).
_JSON_STRING = re.compile(r'"(?>[^"\\]+|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_=-]*\.[A-Za-z0-9_=-]*\.[A-Za-z0-9_=-]*")


@attrs.frozen
class VerifiedRequest:
    """
    A v1 request whose signature, nonce and resource all checked out (the
    nonce is authentic and unexpired; whether another request used it first
    is `gateway.v1.nonces.NonceIssuer.redeem`'s, at the store or in the
    memory of a process alone).

    :ivar jwk: the signer's public JWK.
    :ivar thumbprint: its RFC 7638 thumbprint, the key the gateway looks
        accounts up by.
    :ivar algorithm: the JWS algorithm used (``RS256``, ``ES256``, ``ES384``).
    :ivar protected: the decoded protected header.
    :ivar payload: the decoded payload, a JSON object.
    :ivar raw_payload: the payload bytes exactly as signed.
    :ivar nonce: the gateway nonce it carries, still to redeem.
    """

    jwk: josepy.JWK
    thumbprint: str
    algorithm: str
    protected: JSONObject
    payload: JSONObject
    raw_payload: bytes
    nonce: str = ""


# -- bounded JSON --------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _nesting_depth(text: str) -> int:
    """
    The deepest bracket nesting in ``text``, outside JSON strings.

    For valid JSON this is the nesting depth; for invalid JSON it is at least
    the depth ``json.loads`` reaches before it gives up, so checking it first
    keeps the recursive parser far from Python's recursion limit.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) <= 1:
        return len(brackets)
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def loads_bounded(data: Union[bytes, str], max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """
    Parse untrusted JSON: UTF-8 only, no ``NaN``/``Infinity``, and no deeper
    than ``max_depth``.

    :raises ValueError: for anything else (including too deep).
    """
    if isinstance(data, bytes):
        text = data.decode("utf-8")
        decoded = True
    else:
        text = data
        decoded = False
    if text.count("[") + text.count("{") > max_depth:
        if _nesting_depth(text) > max_depth:
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply")
    if "\\u" in text or not (decoded or text.isascii()):
        _reject_lone_surrogates(parsed)
    return parsed


class NotUnicode(ValueError):
    """
    Parsed JSON holding a string that is no Unicode text.
    """


def _reject_lone_surrogates(value: Any) -> None:
    """
    Refuse a string (key or value, at any depth) holding a lone surrogate:
    JSON's ``\\ud800`` escape decodes to one, which is no Unicode text —
    no UTF-8 encoder (SQLite's, a page's, a terminal's) takes it.

    `loads_bounded` walks only JSON that could hold one: text with a
    ``\\u`` escape, or given as a ``str`` that is not ASCII (it may hold
    the surrogate itself).  Text decoded from UTF-8 holds none, and without
    a ``\\u`` escape every parsed string is made of the text's own
    characters — the walk was a fifth of every v1 signature check.

    :raises NotUnicode: for such a string.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item)  # the keys, strings too
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise NotUnicode("JSON string holds a lone surrogate: not Unicode text")


def decode_json_payload(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> JSONObject:
    """
    Decode a JWS payload that must be a JSON object, such as a v1 request's or
    the inner key-change JWS's.

    :raises V1Problem: ``malformed`` if it is not.
    """
    try:
        payload = loads_bounded(raw, max_depth)
    except ValueError as error:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        if isinstance(error, NotUnicode):
            raise V1Problem.malformed(
                "Request payload holds a string that is not Unicode text (a lone surrogate, "
                "such as \\ud800)")
        raise V1Problem.malformed("Request payload did not parse as JSON")
    if not isinstance(payload, dict):
        raise V1Problem.malformed("Request payload must be a JSON object")
    return payload


# -- JWS structure ---------------------------------------------------------------


def _describe(value: Any) -> str:
    """
    A value for an error detail: short, and safe to echo back.
    """
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > 100:
        text = text[:100] + "..."
    return text


def _decode_b64_member(jws: JSONObject, name: str) -> bytes:
    value = jws.get(name)
    if not isinstance(value, str):
        raise V1Problem.malformed(f"{_PARSE_ERROR}: missing or non-string {name!r}")
    try:
        return b64url_decode(value)
    except ValueError:
        raise V1Problem.malformed(f"{_PARSE_ERROR}: {name!r} is not base64url")


def _as_flattened(jws: Any) -> JSONObject:
    """
    Reduce the JWS to its flattened form, refusing what Boulder refused: a
    general serialization with more than one signature.  One signature in the
    general form is accepted, as go-jose (and so Boulder) did.
    """
    if not isinstance(jws, dict):
        raise V1Problem.malformed(f"{_PARSE_ERROR}: the JWS must be a JSON object")
    if "signatures" not in jws:
        return jws
    signatures = jws["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise V1Problem.malformed(f"{_PARSE_ERROR}: empty or invalid 'signatures'")
    if len(signatures) > 1:
        raise V1Problem.malformed("Too many signatures in POST body")
    if "signature" in jws or "protected" in jws or "header" in jws:
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: mixes the general and flattened serializations"
        )
    (entry,) = signatures
    if not isinstance(entry, dict):
        raise V1Problem.malformed(f"{_PARSE_ERROR}: invalid 'signatures' entry")
    flattened = {"payload": jws.get("payload")}
    for name in ("protected", "header", "signature"):
        if name in entry:
            flattened[name] = entry[name]
    return flattened


def _merged_header(protected: JSONObject, unprotected: JSONObject) -> JSONObject:
    """
    The JOSE header as go-jose saw it: protected and unprotected members
    together.  A member in both must carry the same value, or the request is
    ambiguous (which ``jwk`` signed it?).
    """
    for name in protected.keys() & unprotected.keys():
        if protected[name] != unprotected[name]:
            raise V1Problem.malformed(
                f"JWS header parameter {name!r} differs between the protected "
                "and unprotected headers"
            )
    merged = dict(unprotected)
    merged.update(protected)
    return merged


#: Account keys kept parsed (`_parse_jwk`), and their thumbprints.
KEYS_KEPT = 1024


class _Key:
    """
    A signer's public key as `_parse_jwk` parsed it: its JWK, the plain
    ``cryptography`` public key inside it, and its RFC 7638 thumbprint,
    computed the first time it is asked for and kept with the key.

    Looking the thumbprint up by the JWK instead (an ``lru_cache`` over
    ``thumbprint``) hashed the JWK on every request — josepy hashes a key
    through its public numbers: 8 µs of every v1 POST, a tenth of its
    signature check.
    """

    __slots__ = ("jwk", "public_key", "_thumbprint")

    def __init__(self, jwk: josepy.JWK, public_key: Any) -> None:
        self.jwk = jwk
        self.public_key = public_key
        self._thumbprint: Optional[str] = None

    @property
    def thumbprint(self) -> str:
        if self._thumbprint is None:
            self._thumbprint = thumbprint(self.jwk)
        return self._thumbprint


def _parse_jwk(value: Any) -> _Key:
    """
    The signer's public key, as ACME allows it (`_Key`).

    A client signs every request with the same key: a JWK of plain string
    members is parsed once and kept (`KEYS_KEPT` of them, least recently
    used dropped), as its thumbprint is — parsing it and hashing it for
    the thumbprint were 150 µs of every v1 POST, more than the ES256
    signature check itself.  A JWK that is refused is refused again, each
    time, with the same problem.
    """
    if not isinstance(value, dict):
        raise V1Problem.malformed("JWK in JWS header is not a JSON object")
    if all(type(member) is str for member in value.values()):
        return _parse_jwk_members(tuple(sorted(value.items())))
    return _load_jwk(value)


@functools.lru_cache(maxsize=KEYS_KEPT)
def _parse_jwk_members(members: tuple[tuple[str, str], ...]) -> _Key:
    return _load_jwk(dict(members))


def _load_jwk(value: JSONObject) -> _Key:
    kty = value.get("kty")
    if kty not in ("RSA", "EC"):
        raise V1Problem.malformed(
            f"JWK key type {_describe(kty)} is not supported (RSA or EC only)"
        )
    private = sorted(_PRIVATE_JWK_MEMBERS & value.keys())
    if private:
        # Checked before parsing: josepy would happily (and slowly) load a
        # private key, and a client that sends one has leaked it.
        raise V1Problem.malformed(
            "JWK in JWS header contains private key members: " + ", ".join(private)
        )
    try:
        jwk = cast(josepy.JWK, josepy.JWK.from_json(value))
        # A real ``cryptography`` key, not josepy's comparable wrapper, so that
        # type checks on it work.
        public_key = jwk.key.public_numbers().public_key()
    except Exception:
        # josepy and cryptography raise a zoo of exception types (KeyError,
        # TypeError, ValueError, AttributeError, josepy errors) on bad input,
        # and none of them may escape as a 500.
        raise V1Problem.malformed("JWK in JWS header is invalid")
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size > MAX_RSA_BITS:
        raise V1Problem.malformed(
            f"RSA key of {public_key.key_size} bits is too large; "
            f"at most {MAX_RSA_BITS} are allowed"
        )
    return _Key(jwk, public_key)


def verify_jws_signature(
    jws: JSONObject, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[josepy.JWK, JSONObject, bytes]:
    """
    Check a flattened JWS's headers, key, algorithm and signature; nothing
    about nonces or payload contents.  The v1 key-change's inner JWS (which
    carries neither a nonce nor a ``resource``) is checked with this alone.

    Members other than the JWS's own are ignored, so the key-change payload
    (the inner JWS plus ``"resource"``) can be passed as it is.

    :return: the signer's public JWK, the decoded protected header, and the
        payload bytes exactly as signed.
    :raises V1Problem: ``malformed`` for every failure.
    """
    key, protected, payload, _ = _verify_signature(jws, max_depth)
    return key.jwk, protected, payload


@attrs.frozen
class ParsedJWS:
    """
    A flattened JWS whose structure checked out, not yet its key or
    signature: what the v2 face (`gateway.v2.jws`) verifies against the key
    a ``kid`` stands for.

    :ivar header: the protected and unprotected members together.
    """

    protected_b64: str
    payload_b64: str
    signature: bytes = attrs.field(repr=False)
    protected: JSONObject
    header: JSONObject
    payload: bytes


def _structure(jws: Any, max_depth: int) -> ParsedJWS:
    """
    Step 1 of the module's checks: a flattened JWS (one signature), its
    members base64url, its headers JSON objects that agree, no unsigned
    nonce, no critical extensions.
    """
    jws = _as_flattened(jws)

    protected_raw = _decode_b64_member(jws, "protected")
    payload = _decode_b64_member(jws, "payload")
    signature = _decode_b64_member(jws, "signature")
    try:
        protected = loads_bounded(protected_raw, max_depth)
    except ValueError:
        raise V1Problem.malformed(f"{_PARSE_ERROR}: protected header is not JSON")
    if not isinstance(protected, dict):
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: protected header is not a JSON object"
        )
    unprotected = jws.get("header", {})
    if not isinstance(unprotected, dict):
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: unprotected header is not a JSON object"
        )
    if "nonce" in unprotected:
        # go-jose refused this outright: the nonce would not be signed.
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: nonce parameter included in unprotected header"
        )
    header = _merged_header(protected, unprotected)
    if "crit" in header:
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: critical header extensions are not supported"
        )
    return ParsedJWS(jws["protected"], jws["payload"], signature, protected, header, payload)


def parse_jws(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> ParsedJWS:
    """
    A request body as a flattened JWS whose structure checked out (steps 1
    and the header checks of the module's order), for a verifier that finds
    the key elsewhere.

    :raises V1Problem: ``malformed``.
    """
    return _structure(_parse_body(body, max_depth), max_depth)


def _verify_signature(
    jws: Any, max_depth: int
) -> tuple[_Key, JSONObject, bytes, str]:
    """
    `verify_jws_signature`, returning the parsed key and the algorithm's
    name.
    """
    parsed = _structure(jws, max_depth)
    header = parsed.header
    if "jwk" not in header:
        detail = "No JWK in JWS header"
        if "kid" in header:
            detail += " (kid is not supported by the ACME v1 API)"
        raise V1Problem.malformed(detail)
    key, algorithm = _verify_with_key(parsed, header["jwk"])
    return key, parsed.protected, parsed.payload, algorithm


def verify_with_jwk(parsed: ParsedJWS, jwk_value: Any) -> tuple[josepy.JWK, str]:
    """
    Steps 2 to 4: ``jwk_value`` (a JWK as JSON) is a public key ACME
    allows, ``alg`` is the one algorithm that fits it, and the signature
    verifies with it.

    :return: the JWK and the algorithm's name.
    :raises V1Problem: ``malformed`` (``JWS verification error`` for a
        signature that does not verify).
    """
    key, algorithm = _verify_with_key(parsed, jwk_value)
    return key.jwk, algorithm


def _verify_with_key(parsed: ParsedJWS, jwk_value: Any) -> tuple[_Key, str]:
    """
    `verify_with_jwk`, returning the parsed key.
    """
    header = parsed.header
    key = _parse_jwk(jwk_value)
    public_key = key.public_key
    try:
        expected = algorithm_for_public_key(public_key)
    except UnsupportedKey as error:
        raise V1Problem.malformed(f"Unacceptable JWK in JWS header: {error}")

    alg = header.get("alg")
    if alg != expected.name:
        raise V1Problem.malformed(
            f"JWS signature algorithm {_describe(alg)} does not fit the key; "
            f"expected {expected.name!r}"
        )
    jwk_alg = jwk_value.get("alg")
    if jwk_alg is not None and jwk_alg != expected.name:
        raise V1Problem.malformed(
            f"JWK algorithm {_describe(jwk_alg)} does not fit the key; "
            f"expected {expected.name!r}"
        )

    signing_input = f"{parsed.protected_b64}.{parsed.payload_b64}".encode("ascii")
    try:
        valid = expected.verify(public_key, signing_input, parsed.signature)
    except Exception:
        # cryptography may raise rather than return False on odd inputs.
        valid = False
    if not valid:
        raise V1Problem.malformed("JWS verification error")
    return key, expected.name


def _parse_body(body: bytes, max_depth: int) -> JSONObject:
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        raise V1Problem.malformed(f"{_PARSE_ERROR}: body is not UTF-8 text")
    if _COMPACT_JWS.fullmatch(text.strip()):
        raise V1Problem.malformed(
            f"{_PARSE_ERROR}: the compact serialization is not supported; "
            "send the flattened JSON serialization"
        )
    try:
        parsed = loads_bounded(text, max_depth)
    except ValueError:
        raise V1Problem.malformed(f"{_PARSE_ERROR}: body is not JSON")
    if not isinstance(parsed, dict):
        raise V1Problem.malformed(f"{_PARSE_ERROR}: body is not a JSON object")
    return parsed


def verify_v1_request(
    body: bytes,
    resource: Union[str, tuple[str, ...]],
    nonces: NonceIssuer,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> VerifiedRequest:
    """
    Verify a v1 POST body for the endpoint whose ``resource`` value is
    ``resource``, consuming its nonce.

    :param resource: the endpoint's ``resource`` value (``new-reg``, ...), or
        a tuple of the values it accepts.
    :param nonces: the issuer of the gateway's nonces; the request's nonce is
        checked (authentic, unexpired) only once the signature has verified,
        and left for the caller to redeem (`VerifiedRequest.nonce`).
    :param max_depth: the deepest JSON nesting accepted in the body, the
        protected header and the payload.
    :raises V1Problem: ``malformed`` or ``badNonce``, always 400.
    """
    key, protected, raw_payload, algorithm = _verify_signature(
        _parse_body(body, max_depth), max_depth)

    nonce = protected.get("nonce")
    if nonce is None or nonce == "":
        raise V1Problem.bad_nonce("JWS has no anti-replay nonce")
    if nonces.check(nonce) is None:
        raise invalid_nonce(nonce)

    payload = decode_json_payload(raw_payload, max_depth)
    if "resource" not in payload or payload["resource"] == "":
        raise V1Problem.malformed("Request payload does not specify a resource")
    allowed = (resource,) if isinstance(resource, str) else tuple(resource)
    requested = payload["resource"]
    if not isinstance(requested, str) or requested not in allowed:
        raise V1Problem.malformed(
            "JWS resource payload does not match the HTTP resource: "
            f"{_describe(requested)} != {' or '.join(allowed)}"
        )

    return VerifiedRequest(
        jwk=key.jwk,
        thumbprint=key.thumbprint,
        algorithm=algorithm,
        protected=protected,
        payload=payload,
        raw_payload=raw_payload,
        nonce=nonce,
    )


def invalid_nonce(nonce: object) -> V1Problem:
    """
    Boulder's ``badNonce`` for a nonce that is unknown, expired or used.
    """
    return V1Problem.bad_nonce(f"JWS has an invalid anti-replay nonce: {_describe(nonce)}")
