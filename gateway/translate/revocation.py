"""
v1 ``revoke-cert`` and ``key-change`` translated to v2.

Revocation may be signed by an account key or by the certificate's own
key.  The gateway does not normally hold a certificate key, so for the
latter it checks the v1 signature against the certificate's public key (what
Boulder v1 did) and revokes upstream as the account that issued the certificate,
whose key it holds (RFC 8555 accepts the issuing account for any reason),
or, when no such account can and the certificate key was imported into the
key store, with the certificate key itself.

key-change needs an inner JWS by the *new* private key upstream, which a
v1 client never sends; it works only when the new key is already in the
key store.  A rollover that exists only in the gateway is never made: the
client's key authorizations would stop matching upstream.
"""

from __future__ import annotations

from cryptography import x509
from twisted.logger import Logger

from gateway.keys.jose import b64url_decode, public_jwk, thumbprint
from gateway.store import Account, Insert, Update
from gateway.translate.errors import Conflict, Malformed, NotFound, Unauthorized
from gateway.translate.context import RETIRED, BoundAccount, Context
from gateway.upstream.errors import UpstreamProblem
from gateway.v1.jws import VerifiedRequest, loads_bounded, verify_jws_signature

log = Logger()

#: The reasons Boulder accepted (RFC 5280 codes).
ALLOWED_REASONS = (0, 1, 3, 4, 5)

_NOT_ALLOWED = (
    "Revocation request must be signed by private key of cert to be revoked, by the account "
    "key of the account that issued it, or by the account key of an account that holds valid "
    "authorizations for all names in the certificate."
)


def _certificate(payload: dict) -> tuple:
    raw = payload.get("certificate")
    if not isinstance(raw, str) or not raw:
        raise Malformed("Unable to decode certificate: certificate must be base64url DER")
    try:
        der = b64url_decode(raw)
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Malformed("Unable to decode certificate")
    return der, certificate


def _reason(payload: dict):
    reason = payload.get("reason")
    if reason is None:
        return None
    if isinstance(reason, bool) or not isinstance(reason, int) or reason not in ALLOWED_REASONS:
        raise Malformed("unsupported revocation reason code provided")
    return reason


async def revoke_certificate(context: Context, verified: VerifiedRequest, remote_ip: str) -> None:
    """
    ``revoke-cert``.
    """
    der, certificate = _certificate(verified.payload)
    reason = _reason(verified.payload)
    serial = format(certificate.serial_number, "x")
    stored = await context.store.certificate_by_serial(serial)
    if stored is not None and stored.leaf_der != der:
        raise NotFound("No such certificate")
    if stored is not None and stored.revoked_at is not None:
        raise Conflict("Certificate already revoked")
    certificate_jwk = public_jwk(certificate.public_key())
    signed_by_certificate_key = thumbprint(certificate_jwk) == verified.thumbprint
    # A certificate from a CA the gateway ran against before (--upstream
    # changed) is revoked there, as long as that CA answers.
    elsewhere = stored is not None and not context.is_current(stored) and stored.directory_url
    client = context.upstream_at(stored.directory_url) if elsewhere else context.upstream
    if signed_by_certificate_key:
        # The certificate's own key revokes upstream only when the gateway
        # holds it (imported) and no issuing account can: a certificate from
        # before the gateway, or an issuer whose key left the store.
        certificate_key = context.keys.get(verified.thumbprint)
        issuer = None if stored is None else await context.store.account_by_id(stored.account_id)
        if issuer is None and certificate_key is None:
            raise NotFound("No such certificate")
        if certificate_key is not None and (issuer is None or not context.holds_key_for(issuer.thumbprint)):
            signer = {"certificate_key": certificate_key}
        elif elsewhere:
            signer = {"account": await _account_at(context, client, issuer)}
        else:
            signer = {"account": await context.upstream_for(issuer)}
    else:
        bound = await context.bind_account(verified, remote_ip)
        if stored is not None and stored.account_id != bound.record.id:
            raise Unauthorized(_NOT_ALLOWED)
        if elsewhere:
            signer = {"account": await _account_at(context, client, bound.record)}
        else:
            signer = {"account": bound.upstream}
    await client.revoke_certificate(der, reason=reason, **signer)
    if stored is not None:
        await context.store.update_certificate(
            stored.id, revoked_at=context.now(), revocation_reason=reason if reason is not None else 0
        )


async def _account_at(context: Context, client, account):
    """
    The upstream account of ``account``'s key at the CA of ``client``
    (another CA than the current one), found by key.
    """
    found = await client.find_account(await context.signing_key(account.thumbprint))
    if found is None:
        raise Unauthorized(
            f"The account that issued this certificate is not known to the CA that issued it "
            f"({client.directory_url}) any more")
    return found


async def change_key(
    context: Context, bound: BoundAccount, registration_url: str, payload: dict
) -> object:
    """
    v1 ``key-change`` (Boulder's draft-05 form, MAPPING.md §1.6): the outer
    payload is the inner JWS, signed by the new key, over ``{"account",
    "newKey"}``.

    :return: the updated account record.
    """
    inner = {k: v for k, v in payload.items() if k != "resource"}
    new_jwk, _, inner_payload_bytes = verify_jws_signature(inner)
    try:
        inner_payload = loads_bounded(inner_payload_bytes)
    except ValueError:
        raise Malformed("Inner JWS payload is not JSON")
    if not isinstance(inner_payload, dict):
        raise Malformed("Inner JWS payload is not a JSON object")
    if inner_payload.get("account") != registration_url:
        raise Malformed("Incorrect account URL provided in payload")
    new_key_json = inner_payload.get("newKey")
    if new_key_json != new_jwk.to_json():
        raise Malformed("New JWK in inner payload doesn't match key used to sign inner JWS")
    new_thumbprint = thumbprint(new_jwk)
    if new_thumbprint == bound.thumbprint:
        raise Malformed("New key is the same as the old key")
    new_key = context.keys.get(new_thumbprint)
    if new_key is None:
        raise Unauthorized(
            f"The new account key (JWK thumbprint {new_thumbprint}) is not in the gateway's key "
            f"store. The gateway must roll the account over upstream with the new private key: "
            f"import the new key into the --keys directory first, then retry the key change."
        )
    if await context.store.account_by_thumbprint(new_thumbprint) is not None:
        raise Conflict("New key is already in use for a different account")
    try:
        await context.upstream.change_key(bound.upstream, new_key)
    except UpstreamProblem:
        # The CA may have rolled the account over already, for an attempt
        # whose outcome the gateway never recorded (a crash, a lost answer):
        # the old key is then refused, and the new key finds the account.
        moved = await context.upstream.find_account(new_key)
        if moved is None or moved.url != bound.upstream.url:
            raise
        log.info("key change of account {account} was already done at the CA; recording it",
                 account=bound.record.id)
    # One transaction: the registration under the new key, and the old key
    # remembered as rolled away (it may still sit in the key store, and a
    # request signed by it must be refused, not adopted as a brand-new
    # upstream account).
    written = await context.store.write([
        Update(Account, bound.record.id,
               {"thumbprint": new_thumbprint, "public_jwk": new_key.public_jwk_json}),
        Insert(Account(
            id=0, thumbprint=bound.thumbprint, public_jwk=bound.record.public_jwk,
            upstream_url=None, contact=(), agreement=None, status=RETIRED,
            created_at=context.now(), initial_ip=bound.record.initial_ip,
        )),
    ])
    return written[0]
