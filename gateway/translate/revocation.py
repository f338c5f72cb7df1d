"""
v1 ``revoke-cert`` and ``key-change`` translated to v2.

Revocation may be signed by an account key or by the certificate's own
key.  The gateway does not normally hold a certificate key, so for the
latter the face checked the v1 signature against the certificate's public
key (what Boulder v1 did), and the gateway revokes upstream as the account
that issued the certificate, whose key it holds (RFC 8555 accepts the
issuing account for any reason), or, when no such account can and the
certificate key was imported into the key store, with the certificate key
itself.

key-change needs an inner JWS by the *new* private key upstream, which a
v1 client never sends; it works only when the new key is already in the
key store.  A rollover that exists only in the gateway is never made: the
client's key authorizations would stop matching upstream.  (The face
verified the v1 inner JWS; `gateway.translate.requests.KeyChange` is what
it asked for.)
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from gateway.keys.jose import AccountKey
from gateway.status import Status
from gateway.store import Account, Insert, Update
from gateway.translate.accounts import bind_existing, upstream_for
from gateway.translate.context import Context, written_as
from gateway.translate.errors import AlreadyRevoked, Conflict, Malformed, NotFound, Unauthorized, flow
from gateway.translate.requests import KeyChange, Revoke
from gateway.upstream.client import UpstreamClient
from gateway.upstream.errors import UpstreamProblem
from gateway.upstream.messages import UpstreamAccount

log = Logger()

_NOT_ALLOWED = (
    "Revocation request must be signed by private key of cert to be revoked, by the account "
    "key of the account that issued it, or by the account key of an account that holds valid "
    "authorizations for all names in the certificate."
)


async def revoke_certificate(context: Context, request: Revoke) -> None:
    """
    ``revoke-cert``.
    """
    stored = await context.store.certificate_by_serial(request.serial)
    if stored is not None and stored.leaf_der != request.certificate_der:
        raise NotFound("No such certificate")
    if stored is not None and stored.revoked_at is not None:
        raise AlreadyRevoked("Certificate already revoked")
    # A certificate from a CA the gateway ran against before (--upstream
    # changed) is revoked there, as long as that CA answers.
    elsewhere = (stored.directory_url if stored is not None and not context.is_current(stored)
                 else None)
    client = context.other_cas.at(elsewhere) if elsewhere else context.upstream
    account: Optional[UpstreamAccount] = None
    certificate_key: Optional[AccountKey] = None
    if request.by_certificate_key:
        # The certificate's own key revokes upstream only when the gateway
        # holds it (imported) and no issuing account can: a certificate from
        # before the gateway, or an issuer whose key left the store.
        certificate_key = context.keys.client_key(request.signer.thumbprint)
        issuer: Optional[Account] = (
            None if stored is None else await context.store.account_by_id(stored.account_id))
        if issuer is None and certificate_key is None:
            raise NotFound("No such certificate")
        if issuer is not None and (certificate_key is None
                                   or context.keys.holds(issuer.thumbprint)):
            certificate_key = None
            account = (await _account_at(context, client, issuer) if elsewhere
                       else await upstream_for(context, issuer))
    else:
        bound = await bind_existing(context, request.signer)
        if stored is not None and stored.account_id != bound.record.id:
            raise Unauthorized(_NOT_ALLOWED)
        account = (await _account_at(context, client, bound.record) if elsewhere
                   else bound.upstream)
    if account is not None:
        await client.revoke_certificate(request.certificate_der, reason=request.reason,
                                        account=account)
    else:
        await client.revoke_certificate(request.certificate_der, reason=request.reason,
                                        certificate_key=certificate_key)
    if stored is not None:
        await context.store.update_certificate(
            stored.id, revoked_at=context.now(),
            revocation_reason=request.reason if request.reason is not None else 0,
        )


revoke_certificate = flow(revoke_certificate)


async def _account_at(context: Context, client: UpstreamClient, account: Account) -> UpstreamAccount:
    """
    The upstream account of ``account``'s key at the CA of ``client``
    (another CA than the current one), found by key.
    """
    found = await client.find_account(await context.keys.obtain(account.thumbprint))
    if found is None:
        raise Unauthorized(
            f"The account that issued this certificate is not known to the CA that issued it "
            f"({client.directory_url}) any more")
    return found


async def change_key(context: Context, request: KeyChange) -> Account:
    """
    v1 ``key-change`` (Boulder's draft-05 form, MAPPING.md §1.6): the outer
    payload is the inner JWS, signed by the new key, over ``{"account",
    "newKey"}``.

    :return: the updated account record.
    """
    bound = await bind_existing(context, request.signer)
    if request.account != request.registration_url(bound.record.id):
        raise Malformed("Incorrect account URL provided in payload")
    new_thumbprint = request.new_thumbprint
    new_key = context.keys.client_key(new_thumbprint)
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
            upstream_url=None, contact=(), agreement=None, status=Status.RETIRED,
            created_at=context.now(), initial_ip=bound.record.initial_ip,
        )),
    ])
    return written_as(Account, written[0])


change_key = flow(change_key)
