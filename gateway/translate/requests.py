"""
The v1 requests the gateway acts on, as validated values -- and the few
draft-era v2 requests that have no v1 counterpart (`NewAccount`,
`NewOrder`, `FinalizeOrder`); the v2 face builds the others (challenge
answers, authorization deactivation, revocation, account updates) with the
same builders.

The v1 face verifies a request's JWS (signature, nonce, ``resource``) and
hands its payload to one function here, which checks everything that can
be checked without an account — fields, identifiers, the CSR (parsed and
its signature checked, once), certificates, contacts — and returns one
frozen value (`NewReg`, `RegUpdate`, `NewAuthz`, `AnswerChallenge`,
`DeactivateAuthz`, `NewCert`, `Revoke`, `KeyChange`).  The face then calls
the flow once with that value; the flow binds the account itself.  A
malformed request is therefore refused before anything costs an upstream
call or writes a row, and no input is parsed twice.

Some checks must wait for the account, because Boulder made them in that
order and a client learns from which error it gets: a challenge or an
authorization is checked for ownership before its payload is judged (the
value keeps what the payload said, unjudged), and a key change's account
URL can only be compared with the signer's registration once it is bound.

Pure: no I/O, nothing of either wire protocol; refusals are domain
exceptions (`gateway.translate.errors`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Tuple, cast

import attrs
import josepy
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.keys.jose import (
    UnsupportedKey,
    algorithm_for_public_key,
    b64url_decode,
    public_jwk,
    thumbprint,
)
from gateway.status import Status
from gateway.translate.csr import ParsedCSR, parse_csr
from gateway.translate.errors import CSRRejected, InvalidContact, Malformed
from gateway.translate.policy import DNSName, check_name_set, parse_v1_identifier

#: The JSON payload of a verified v1 request.
Payload = Mapping[str, Any]

class _Absent:
    """
    The value of a payload field the client did not send.
    """

    def __repr__(self) -> str:
        return "ABSENT"


#: What a request value holds for a payload field the client did not send.
ABSENT = _Absent()

#: The reasons Boulder accepted (RFC 5280 codes).
ALLOWED_REASONS = (0, 1, 3, 4, 5)

_REGISTRATION_FIELDS = frozenset({
    "resource", "contact", "agreement", "key", "status", "id", "initialIp", "createdAt",
    "authorizations", "certificates",
})


@attrs.frozen
class Signer:
    """
    Who signed a verified v1 request, and from where.

    :ivar jwk: the signer's public JWK (from the JWS header).
    :ivar thumbprint: its RFC 7638 thumbprint, the key accounts are found by.
    :ivar address: the client's address, recorded as a registration's
        ``initialIp`` when the request creates one.
    :ivar user_agent: the client's User-Agent, which per-client profile
        rules may match (`gateway.translate.profiles`).
    """

    jwk: josepy.JWK
    thumbprint: str
    address: str = ""
    user_agent: str = ""


@attrs.frozen
class NewReg:
    """
    ``new-reg``.
    """

    signer: Signer
    contact: Tuple[str, ...]
    agreement: Optional[str]


@attrs.frozen
class RegUpdate:
    """
    ``reg/<id>``: the changes asked for (`None`: leave as it is).

    :ivar status: `Status.VALID`, `Status.DEACTIVATED`, or `None`.
    """

    signer: Signer
    registration_id: str
    contact: Optional[Tuple[str, ...]]
    agreement: Optional[str]
    status: Optional[Status]


@attrs.frozen
class NewAuthz:
    """
    ``new-authz`` for one checked name.
    """

    signer: Signer
    name: DNSName


@attrs.frozen
class AnswerChallenge:
    """
    A v1 challenge POST.  What the payload said is judged once the
    challenge is known to be the signer's (Boulder's order).

    :ivar type: the ``type`` the client sent, or `ABSENT`.
    :ivar key_authorization: the ``keyAuthorization`` it sent, or `ABSENT`.
    """

    signer: Signer
    authorization_id: str
    challenge_id: str
    type: object = ABSENT
    key_authorization: object = ABSENT


@attrs.frozen
class DeactivateAuthz:
    """
    A v1 authorization POST.  Only ``{"status": "deactivated"}`` is
    meaningful; whether it said so is judged after ownership.
    """

    signer: Signer
    authorization_id: str
    deactivate: bool


@attrs.frozen
class NewCert:
    """
    ``new-cert`` with its CSR parsed and checked.
    """

    signer: Signer
    csr: ParsedCSR

    @property
    def names(self) -> Tuple[str, ...]:
        """
        The CSR's names, sorted, as certificates spell them.
        """
        return tuple(sorted(n.spelled for n in self.csr.names))


@attrs.frozen
class Revoke:
    """
    ``revoke-cert``.

    :ivar by_certificate_key: signed by the certificate's own key rather
        than an account key.
    """

    signer: Signer
    certificate_der: bytes = attrs.field(repr=False)
    serial: str
    reason: Optional[int]
    by_certificate_key: bool


@attrs.frozen
class KeyChange:
    """
    ``key-change`` (Boulder's draft-05 form): the inner JWS, signed by the
    new key, already verified by the face.

    :ivar account: the account URL the inner payload names.
    :ivar registration_url: the v1 URL of a registration id, to compare
        ``account`` with the signer's once it is bound.
    """

    signer: Signer
    account: object
    registration_url: Callable[[int], str]
    new_jwk: josepy.JWK
    new_thumbprint: str


# -- registrations --------------------------------------------------------------


def _contact(payload: Payload) -> Optional[Tuple[str, ...]]:
    """
    The ``contact`` of a payload, checked as Boulder v1 did (``mailto:``
    URIs only), or ``None`` when absent.
    """
    if "contact" not in payload or payload["contact"] is None:
        return None
    contact = payload["contact"]
    if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
        raise Malformed("Request payload did not parse as JSON: contact must be a list of strings")
    for entry in contact:
        if not entry.startswith("mailto:") or "@" not in entry or len(entry) > 320:
            raise InvalidContact(f"Contact method {entry!r} is not supported: use mailto: addresses")
    return tuple(contact)


def _agreement(payload: Payload) -> Optional[str]:
    agreement = payload.get("agreement")
    if agreement is None or agreement == "":
        return None
    if not isinstance(agreement, str):
        raise Malformed("agreement must be a string")
    return agreement


def _check_fields(payload: Payload) -> None:
    unknown = set(payload) - _REGISTRATION_FIELDS
    if unknown:
        raise Malformed(f"Unknown registration field(s): {', '.join(sorted(unknown))}")


def new_reg(signer: Signer, payload: Payload) -> NewReg:
    """
    :raises Malformed: an unknown field, a contact or agreement of the
        wrong type.
    :raises InvalidContact: a contact that is not a ``mailto:`` URI.
    """
    _check_fields(payload)
    return NewReg(signer, _contact(payload) or (), _agreement(payload))


def reg_update(signer: Signer, registration_id: str, payload: Payload) -> RegUpdate:
    """
    :raises Malformed, InvalidContact: as for `new_reg`, and a status other
        than ``valid`` or ``deactivated``.
    """
    _check_fields(payload)
    contact = _contact(payload)
    agreement = _agreement(payload)
    status = payload.get("status")
    if status not in (None, Status.VALID, Status.DEACTIVATED):
        raise Malformed("Invalid value provided for status field")
    return RegUpdate(signer, registration_id, contact, agreement,
                     None if status is None else Status(status))


# -- authorizations and challenges ---------------------------------------------------


def new_authz(signer: Signer, payload: Payload) -> NewAuthz:
    """
    :raises IdentifierRejected: a malformed identifier or a name the
        gateway does not issue for.
    """
    return NewAuthz(signer, parse_v1_identifier(payload.get("identifier"), allow_wildcard=True))


def answer_challenge(signer: Signer, authorization_id: str, challenge_id: str,
                     payload: Payload) -> AnswerChallenge:
    return AnswerChallenge(signer, authorization_id, challenge_id,
                           payload.get("type", ABSENT), payload.get("keyAuthorization", ABSENT))


def deactivate_authz(signer: Signer, authorization_id: str, payload: Payload) -> DeactivateAuthz:
    return DeactivateAuthz(signer, authorization_id,
                           payload.get("status") == Status.DEACTIVATED)


# -- certificates ---------------------------------------------------------------


def _csr_der(payload: Payload) -> bytes:
    csr = payload.get("csr")
    if not isinstance(csr, str) or not csr:
        raise CSRRejected(
            "Error unmarshaling certificate request: csr must be a base64url string")
    try:
        return b64url_decode(csr)
    except ValueError:
        raise CSRRejected("Error unmarshaling certificate request: csr is not base64url")


def spki_of_jwk(jwk: josepy.JWK) -> Optional[bytes]:
    """
    The SubjectPublicKeyInfo (DER) of a public JWK, or `None` when it has
    none that can be spelled so.
    """
    try:
        spki: bytes = jwk.key.public_numbers().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return spki
    except (AttributeError, TypeError, ValueError):
        return None


def new_cert(signer: Signer, payload: Payload) -> NewCert:
    """
    :raises CSRRejected: an unusable CSR, and a CSR for the account key
        itself (Boulder refused it: a certificate for the account key would
        let whoever holds the certificate's key act as the account).
    :raises IdentifierRejected: a name the gateway does not issue for.
    """
    csr = parse_csr(_csr_der(payload), allow_wildcard=True)
    if csr.public_key_der == spki_of_jwk(signer.jwk):
        raise CSRRejected("Certificate public key must be different than account key")
    return NewCert(signer, csr)


def revoke(signer: Signer, payload: Payload) -> Revoke:
    """
    :raises Malformed: a certificate that does not decode, a reason Boulder
        did not accept.
    """
    raw = payload.get("certificate")
    if not isinstance(raw, str) or not raw:
        raise Malformed("Unable to decode certificate: certificate must be base64url DER")
    try:
        der = b64url_decode(raw)
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Malformed("Unable to decode certificate")
    reason = payload.get("reason")
    if reason is not None and (isinstance(reason, bool) or not isinstance(reason, int)
                               or reason not in ALLOWED_REASONS):
        raise Malformed("unsupported revocation reason code provided")
    return Revoke(signer, der, format(certificate.serial_number, "x"), reason,
                  _signed_by_certificate_key(certificate, signer))


def _signed_by_certificate_key(certificate: x509.Certificate, signer: Signer) -> bool:
    """
    Whether the certificate's own key signed the request.  A v1 JWS is
    signed by an RSA (2048 bits or more), P-256 or P-384 key: a certificate
    for any other key (Ed25519, Ed448, DSA, another curve) cannot have, and
    its key has no JWK to compare (``public_jwk`` raises for it).
    """
    key = certificate.public_key()
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return False
    try:
        algorithm_for_public_key(key)
    except UnsupportedKey:
        return False
    return thumbprint(public_jwk(key)) == signer.thumbprint


# -- key change -------------------------------------------------------------------


def key_change(signer: Signer, new_jwk: josepy.JWK, inner_payload: Payload,
               registration_url: Callable[[int], str]) -> KeyChange:
    """
    The key change an inner JWS (verified, signed by ``new_jwk``) asks for.

    :raises Malformed: an inner payload whose ``newKey`` is not the key
        that signed it, or a new key that is the old one.
    """
    if inner_payload.get("newKey") != new_jwk.to_json():
        raise Malformed("New JWK in inner payload doesn't match key used to sign inner JWS")
    new_thumbprint = thumbprint(new_jwk)
    if new_thumbprint == signer.thumbprint:
        raise Malformed("New key is the same as the old key")
    return KeyChange(signer, inner_payload.get("account"), registration_url, new_jwk,
                     new_thumbprint)


# -- draft-era ACME v2 --------------------------------------------------------------


@attrs.frozen
class NewAccount:
    """
    A v2 ``newAccount``: find the key's account, or create it (unless
    ``only_existing``).

    :ivar terms_agreed: the client agreed to the CA's terms.
    """

    signer: Signer
    contact: Tuple[str, ...]
    terms_agreed: bool
    only_existing: bool


@attrs.frozen
class NewOrder:
    """
    A v2 ``newOrder`` for checked names (deduplicated, sorted by spelling).
    """

    signer: Signer
    names: Tuple[DNSName, ...]

    @property
    def spellings(self) -> Tuple[str, ...]:
        return tuple(n.spelled for n in self.names)


@attrs.frozen
class FinalizeOrder:
    """
    A v2 ``finalize`` of the order ``order_id`` with a parsed CSR.
    """

    signer: Signer
    order_id: str
    csr: ParsedCSR


def new_account(signer: Signer, payload: Payload) -> NewAccount:
    """
    :raises Malformed, InvalidContact: as a v1 ``new-reg``'s contact.
    """
    only_existing = payload.get("onlyReturnExisting") is True
    return NewAccount(signer, _contact(payload) or (), payload.get("termsOfServiceAgreed") is True,
                      only_existing)


def account_update(signer: Signer, account_id: str, payload: Payload) -> RegUpdate:
    """
    A POST to a v2 account URL: a read (no change), a contact change, or a
    deactivation.  Members a draft-era client adds (``resource``,
    ``termsOfServiceAgreed``, ``key``…) are ignored, as Boulder's v2 did.

    :raises Malformed, InvalidContact: a bad contact, a status other than
        ``deactivated``.
    """
    status = payload.get("status")
    if status not in (None, Status.VALID, Status.DEACTIVATED):
        raise Malformed("Invalid value provided for status field")
    return RegUpdate(signer, account_id, _contact(payload), None,
                     Status.DEACTIVATED if status == Status.DEACTIVATED else None)


def new_order(signer: Signer, payload: Payload) -> NewOrder:
    """
    :raises Malformed: no identifiers, or not a list.
    :raises IdentifierRejected: a name the gateway does not issue for, or
        one a wildcard of the same order covers.
    """
    identifiers = payload.get("identifiers")
    if not isinstance(identifiers, list) or not identifiers:
        raise Malformed("NewOrder request did not specify any identifiers")
    names = check_name_set(parse_v1_identifier(i, allow_wildcard=True) for i in identifiers)
    return NewOrder(signer, names)


def finalize_order(signer: Signer, order_id: str, payload: Payload) -> FinalizeOrder:
    """
    :raises CSRRejected, IdentifierRejected: as for `new_cert`.
    """
    return FinalizeOrder(signer, order_id, new_cert(signer, payload).csr)


def key_change_v2(signer: Signer, new_jwk: josepy.JWK, inner_payload: Payload,
                  kid: str) -> KeyChange:
    """
    A v2 ``keyChange`` (RFC 8555's inner ``{"account", "oldKey"}``, or the
    drafts' ``{"account", "newKey"}``), the inner JWS signed by the new key
    and already verified.  The outer JWS named its account by ``kid``,
    which the face tied to the signer's key: the inner ``account`` must be
    that same URL.

    :raises Malformed: another account, a key that is not the one that
        signed, or a new key that is the old one.
    """
    if inner_payload.get("account") != kid:
        raise Malformed("Inner key-change payload's account does not match the outer JWS's key ID")
    if "oldKey" in inner_payload:
        if _thumbprint_of(inner_payload.get("oldKey")) != signer.thumbprint:
            raise Malformed("Inner JWS payload's oldKey does not match the outer JWS's key")
    elif _thumbprint_of(inner_payload.get("newKey")) != thumbprint(new_jwk):
        raise Malformed("Inner key-change payload has neither oldKey nor the new key as newKey")
    new_thumbprint = thumbprint(new_jwk)
    if new_thumbprint == signer.thumbprint:
        raise Malformed("New key is the same as the old key")
    return KeyChange(signer, kid, lambda account_id: kid, new_jwk, new_thumbprint)


def _thumbprint_of(value: Any) -> Optional[str]:
    """
    The thumbprint of a public JWK a payload carries, or `None` when it is
    none.
    """
    if not isinstance(value, dict):
        return None
    try:
        return thumbprint(cast(josepy.JWK, josepy.JWK.from_json(value)))
    except Exception:
        # josepy raises a zoo of types on bad input; none may escape.
        return None
