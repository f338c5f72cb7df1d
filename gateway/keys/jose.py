"""
JOSE primitives shared by both faces of the gateway.

The gateway signs upstream ACME v2 requests with the very key pair a legacy
client uses for its v1 account (the CA checks key authorizations against that
key's thumbprint), and it verifies v1 requests signed with the same keys.  So
one small vocabulary serves both directions: an `AccountKey` wraps a private
key, knows its JWS algorithm and RFC 7638 thumbprint, and `sign_flattened`
builds an RFC 7515 flattened JSON serialization.

Only the algorithms ACME CAs accept are supported: RS256 for RSA (2048 bits or
more), ES256 for P-256 and ES384 for P-384.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from json.encoder import encode_basestring_ascii
from typing import Any, Dict, Mapping, Optional, Union

import attrs
import josepy
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

MIN_RSA_BITS = 2048

_CURVE_ALGORITHMS = {
    "secp256r1": josepy.ES256,
    "secp384r1": josepy.ES384,
}


class UnsupportedKey(ValueError):
    """
    A key the gateway cannot use for ACME: wrong type, curve or size.
    """


def b64url(data: bytes) -> str:
    """
    Unpadded base64url, as every JOSE and ACME field uses it.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: Union[str, bytes]) -> bytes:
    """
    Decode unpadded (or padded) base64url, strictly: characters outside the
    URL-safe alphabet are an error rather than silently dropped.

    :raises ValueError: on any invalid input.
    """
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("base64url text must be ASCII")
    else:
        raw = text
    raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("invalid base64url length")
    allowed = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if raw.translate(None, allowed):
        raise ValueError("invalid base64url character")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def algorithm_for_public_key(key: PublicKey) -> josepy.JWASignature:
    """
    The one JWS algorithm ACME accepts for ``key``.

    :raises UnsupportedKey: for other key types, curves, or short RSA keys.
    """
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedKey(
                f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
        return josepy.RS256
    if isinstance(key, ec.EllipticCurvePublicKey):
        try:
            return _CURVE_ALGORITHMS[key.curve.name]
        except KeyError:
            raise UnsupportedKey(
                f"EC curve {key.curve.name} is not supported (P-256 or P-384)"
            )
    raise UnsupportedKey(f"unsupported key type {type(key).__name__}")


def public_jwk(key: Union[PrivateKey, PublicKey]) -> josepy.JWK:
    """
    The public JWK of a private or public key.
    """
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        key = key.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return josepy.JWKRSA(key=key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return josepy.JWKEC(key=key)
    raise UnsupportedKey(f"unsupported key type {type(key).__name__}")


def thumbprint(jwk: josepy.JWK) -> str:
    """
    RFC 7638 SHA-256 thumbprint of ``jwk``, base64url-encoded: the name by
    which the gateway knows an account key, and the suffix of every key
    authorization.
    """
    return b64url(jwk.public_key().thumbprint(hash_function=hashes.SHA256))


def key_type_label(key: Union[PrivateKey, PublicKey]) -> str:
    """
    A short human label such as ``RSA-2048`` or ``EC-P256``.
    """
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA-{key.key_size}"
    curve = {"secp256r1": "P256", "secp384r1": "P384"}.get(key.curve.name, key.curve.name)
    return f"EC-{curve}"


@attrs.frozen(eq=False)
class AccountKey:
    """
    A private key the gateway may sign with, with everything derived from it
    computed once.

    :ivar private_key: the ``cryptography`` private key.
    :ivar algorithm: the JWS algorithm that fits the key.
    :ivar jwk: the public JWK (never the private members).
    :ivar thumbprint: the RFC 7638 thumbprint, base64url.
    """

    private_key: PrivateKey = attrs.field(repr=False)
    algorithm: josepy.JWASignature
    jwk: josepy.JWK
    thumbprint: str
    #: The public JWK as JSON members, and the protected header's opening
    #: (``alg`` and, for a ``jwk`` header, the key) as JSON text: built once,
    #: not for every upstream request (`protected_header`).
    _jwk_members: Dict[str, Any] = attrs.field(init=False, repr=False)
    _alg_member: str = attrs.field(init=False, repr=False)
    _jwk_member: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        members = self.jwk.to_json()
        object.__setattr__(self, "_jwk_members", members)
        object.__setattr__(self, "_alg_member",
                           '{"alg":' + encode_basestring_ascii(self.algorithm.name))
        object.__setattr__(self, "_jwk_member", ',"jwk":' + json.dumps(
            members, separators=(",", ":"), sort_keys=True))

    @classmethod
    def from_private_key(cls, private_key: PrivateKey) -> "AccountKey":
        """
        Wrap ``private_key``, checking that ACME can use it.

        :raises UnsupportedKey: when it cannot.
        """
        if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise UnsupportedKey(f"unsupported key type {type(private_key).__name__}")
        algorithm = algorithm_for_public_key(private_key.public_key())
        jwk = public_jwk(private_key)
        return cls(
            private_key=private_key,
            algorithm=algorithm,
            jwk=jwk,
            thumbprint=thumbprint(jwk),
        )

    @property
    def public_jwk_json(self) -> dict:
        """
        The public JWK as a JSON object (a copy: the members are strings).
        """
        return dict(self._jwk_members)

    def protected_header(self, nonce: str, url: str, kid: Optional[str] = None) -> bytes:
        """
        The JSON text of an upstream request's protected header: ``alg``,
        ``nonce``, ``url`` and ``kid`` or (without one) ``jwk``, exactly as
        ``json.dumps(header, separators=(",", ":"), sort_keys=True)`` spells
        it, from the pieces of the key built once.
        """
        signer = ',"kid":' + encode_basestring_ascii(kid) if kid is not None else self._jwk_member
        return (self._alg_member + signer + ',"nonce":' + encode_basestring_ascii(nonce)
                + ',"url":' + encode_basestring_ascii(url) + "}").encode("ascii")

    @property
    def label(self) -> str:
        """
        A short label of the key's type, for listings and logs.
        """
        return key_type_label(self.private_key)

    def key_authorization(self, token: str) -> str:
        """
        The key authorization for a challenge ``token`` (RFC 8555 §8.1).
        """
        return f"{token}.{self.thumbprint}"

    def sign(self, signing_input: bytes) -> bytes:
        """
        Sign a JWS signing input (``protected.payload``); EC signatures come back
        in the raw ``r||s`` form JWS requires.
        """
        return self.algorithm.sign(self.private_key, signing_input)


def dns01_txt_value(key_authorization: str) -> str:
    """
    The TXT record value for a dns-01 challenge (RFC 8555 §8.4).
    """
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key_authorization.encode("ascii"))
    return b64url(digest.finalize())


def encode_payload(payload: Any) -> bytes:
    """
    Serialize a JWS payload.  ``None`` stands for the empty payload of
    POST-as-GET (the empty string, not ``""`` JSON-encoded).
    """
    if payload is None:
        return b""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign_flattened(
    key: AccountKey, payload: Any, protected: Mapping[str, Any]
) -> dict:
    """
    Build a flattened JWS (RFC 7515 §7.2.2) over ``payload``, with ``alg`` added
    to the ``protected`` header.

    :param payload: a JSON-serializable object, or ``None`` for the empty
        payload of POST-as-GET.
    :return: the JWS as a JSON object: ``protected``, ``payload``, ``signature``.
    """
    header = dict(protected)
    header["alg"] = key.algorithm.name
    protected_b64 = b64url(
        json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    )
    payload_b64 = b64url(encode_payload(payload))
    signature = key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"))
    return {
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": b64url(signature),
    }


def sign_request(key: AccountKey, payload: Any, nonce: str, url: str,
                 kid: Optional[str] = None) -> bytes:
    """
    The body of an upstream ACME request: the flattened JWS of
    `sign_flattened` with the protected header ``nonce``, ``url`` and
    ``kid`` (or ``jwk`` without one), serialized as ``json.dumps`` does by
    default.  The header comes from `AccountKey.protected_header` and the
    JWS members are base64url, which JSON needs no escaping for: no JSON
    encoder runs but the payload's.
    """
    protected_b64 = b64url(key.protected_header(nonce, url, kid))
    payload_b64 = b64url(encode_payload(payload))
    signature_b64 = b64url(key.sign(f"{protected_b64}.{payload_b64}".encode("ascii")))
    return (f'{{"protected": "{protected_b64}", "payload": "{payload_b64}", '
            f'"signature": "{signature_b64}"}}').encode("ascii")


def external_account_binding(kid: str, hmac_key: bytes, account_jwk: Mapping[str, Any],
                             url: str) -> dict:
    """
    An External Account Binding (RFC 8555 §7.3.4) for a ``newAccount``
    request: a flattened JWS, MAC'd with HS256 under the CA's ``hmac_key``,
    whose payload is the new account's public JWK and whose protected
    header names the CA's key id (``kid``) and the ``newAccount`` URL
    (``url``), and carries no nonce.

    :param hmac_key: the MAC key, decoded (CAs hand it out as base64url).
    """
    header = {"alg": "HS256", "kid": kid, "url": url}
    protected_b64 = b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
    payload_b64 = b64url(json.dumps(dict(account_jwk), separators=(",", ":"),
                                    sort_keys=True).encode())
    mac = hmac.new(hmac_key, f"{protected_b64}.{payload_b64}".encode("ascii"), hashlib.sha256)
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64url(mac.digest())}
