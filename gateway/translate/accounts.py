"""
Binding a verified v1 signer to its stored and its upstream account.

A migrating client never calls ``new-reg`` again: its account was made at
the old v1 CA, so its first request may be ``new-authz`` or ``new-cert``.
`bind` therefore finds (or, when the CA has never seen the key, creates)
the upstream account on the first request signed by any key the gateway
holds, and records it, so later requests cost no upstream lookup.  Every
flow that acts for an account binds its signer itself, once; a flow that
acts on something the account must already have binds with
`bind_existing`, which makes no account for a managed-mode key never seen
(only ``new-reg``, ``new-authz`` and ``new-cert`` do).

The key that signs upstream is the client's own (from the key store), or in
managed mode a gateway key bound to the client key
(`gateway.translate.signing.SigningKeys`).

A CA that lost its state (a restarted Pebble) no longer knows an account it
used to: `AccountRecovery`, given to the upstream client when it is made,
finds or creates the account again and records its new URL.
"""

from __future__ import annotations

from typing import Optional, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.keys.jose import AccountKey
from gateway.status import Status
from gateway.store import Account, Authorization, DuplicateAccount, IStore, Update
from gateway.store.records import format_timestamp
from gateway.translate.bindings import AccountBindings
from gateway.translate.context import Context
from gateway.translate.errors import ExternalAccountRequired, Unauthorized
from gateway.translate.requests import Signer
from gateway.translate.signing import key_not_in_store
from gateway.upstream.client import UpstreamClient
from gateway.upstream.errors import UpstreamProblem
from gateway.upstream.messages import UpstreamAccount

log = Logger()


@attrs.frozen
class BoundAccount:
    """
    A v1 signer resolved to its stored account and its upstream account.

    :ivar managed: whether the upstream key is a gateway-managed one (not
        the client's).
    """

    record: Account
    upstream: UpstreamAccount
    managed: bool = False

    @property
    def key(self) -> AccountKey:
        """
        The key that signs upstream (the client's own, unless managed).
        """
        key: AccountKey = self.upstream.key
        return key

    @property
    def thumbprint(self) -> str:
        return self.record.thumbprint


async def bind(context: Context, signer: Signer) -> BoundAccount:
    """
    Resolve the signer of an account-bound request (anything but
    ``new-reg`` and a revocation signed by the certificate's key).

    :raises Unauthorized: for a key the gateway does not hold, a key a key
        change replaced, or a deactivated registration.
    """
    key = await context.keys.obtain(signer.thumbprint)
    lock = context.locks.lock_for("account:" + signer.thumbprint)
    await lock.acquire()
    try:
        record = await context.store.account_by_thumbprint(signer.thumbprint)
        if record is None:
            record = await _adopt(context, key, signer)
        if record.status == Status.RETIRED:
            raise Unauthorized(
                "No registration exists matching provided key (this key was replaced by a "
                "key change)"
            )
        if record.status != Status.VALID:
            raise Unauthorized(f"Registration is not valid, has status '{record.status}'")
        upstream = await upstream_for(context, record)
        if record.upstream_url != upstream.url:
            record = await _account(context, record.id)
    finally:
        lock.release()
    return BoundAccount(record=record, upstream=upstream,
                        managed=context.keys.is_managed(signer.thumbprint))


#: Boulder's answer to a key with no registration.
NO_REGISTRATION = "No registration exists matching provided key"


async def bind_existing(context: Context, signer: Signer) -> BoundAccount:
    """
    `bind` for a request that acts on what an account already has — a
    challenge, an authorization, its registration, a certificate, a key
    change.  In managed mode a key the gateway has never seen owns none of
    these, so it is refused as Boulder refused an unregistered key, before
    a managed key file, an upstream account or a row is made: Let's Encrypt
    allows 10 new accounts per IP address per 3 hours, and fresh keys
    POSTing to nothing would otherwise spend them (issue 18 item 6).  A key
    in the key store is bound as `bind` binds it (a migrating client's
    account exists at the CA already).

    :raises Unauthorized: as `bind`, and for a managed-mode key with no
        stored account.
    """
    if (context.keys.is_managed(signer.thumbprint)
            and await context.store.account_by_thumbprint(signer.thumbprint) is None):
        raise Unauthorized(NO_REGISTRATION)
    return await bind(context, signer)


async def _adopt(context: Context, key: AccountKey, signer: Signer) -> Account:
    """
    First sight of a key the gateway holds: record the v1 registration the
    client made at the old CA, backed by the upstream account of the same
    key.
    """
    upstream = await context.upstream.find_account(key)
    if upstream is None:
        upstream = await create_upstream_account(
            context.upstream, context.policy.bindings, key,
            terms_of_service_agreed=context.policy.agree_to_terms)
    try:
        account: Account = await context.store.create_account(
            thumbprint=signer.thumbprint,
            public_jwk=signer.jwk.to_json(),
            contact=tuple(upstream.contact),
            agreement=None,
            initial_ip=signer.address,
            upstream_url=upstream.url,
        )
        return account
    except DuplicateAccount:
        existing: Optional[Account] = await context.store.account_by_thumbprint(signer.thumbprint)
        assert existing is not None
        return existing


async def _account(context: Context, account_id: int) -> Account:
    """
    A stored account the caller knows exists.
    """
    account = await context.store.account_by_id(account_id)
    if account is None:
        raise Unauthorized(NO_REGISTRATION)
    return account


async def upstream_for(context: Context, account: Account) -> UpstreamAccount:
    """
    The upstream account of a stored account, without any upstream call
    when its URL is known.

    :raises Unauthorized: when the gateway no longer holds its key.
    """
    key = context.keys.get(account.thumbprint)
    if key is None:
        raise key_not_in_store(account.thumbprint)
    url = account.upstream_url
    if url is None:
        url = await _attach_upstream(context, account, key)
    return UpstreamAccount(key=key, url=url, status=account.status)


async def _attach_upstream(context: Context, account: Account, key: AccountKey) -> str:
    """
    Find (or create) the upstream account of a stored account's key, and
    record its URL.
    """
    upstream = await context.upstream.find_account(key)
    if upstream is None:
        upstream = await create_upstream_account(
            context.upstream, context.policy.bindings, key,
            contact=account.contact,
            terms_of_service_agreed=bool(account.agreement) or context.policy.agree_to_terms,
        )
        log.info("created upstream account {url} for key {thumbprint}",
                 url=upstream.url, thumbprint=key.thumbprint)
    await context.store.update_account(account.id, upstream_url=upstream.url)
    return upstream.url


#: The upstream problems with which a CA refuses an External Account
#: Binding the gateway sent (a wrong or used key id, a wrong HMAC key).
_BINDING_REFUSED = frozenset({"unauthorized", "malformed", "badPublicKey",
                              "externalAccountRequired"})


async def create_upstream_account(
    upstream: UpstreamClient, bindings: AccountBindings, key: AccountKey,
    contact: Sequence[str] = (), terms_of_service_agreed: bool = True,
) -> UpstreamAccount:
    """
    Create the upstream account of ``key`` (every ``newAccount`` the
    gateway sends goes through here), bound to an external account when
    the operator gave credentials for it (`AccountBindings`).

    :raises ExternalAccountRequired: when the CA requires a binding
        (``meta.externalAccountRequired``, or its ``externalAccountRequired``
        problem) and the gateway has none for this key, or the CA refused
        the one it sent: the client is told which flag gives one, never the
        CA's raw text alone.
    """
    binding = bindings.for_key(key.thumbprint)
    directory = await upstream.directory()
    if binding is None and directory.external_account_required:
        raise ExternalAccountRequired(_binding_missing(upstream.directory_url, key.thumbprint))
    try:
        return await upstream.new_account(key, contact=contact,
                                          terms_of_service_agreed=terms_of_service_agreed,
                                          binding=binding)
    except UpstreamProblem as problem:
        if binding is None and problem.code == "externalAccountRequired":
            raise ExternalAccountRequired(
                _binding_missing(upstream.directory_url, key.thumbprint)) from problem
        if binding is not None and problem.code in _BINDING_REFUSED:
            raise ExternalAccountRequired(
                f"The upstream CA ({upstream.directory_url}) refused the External Account "
                f"Binding the gateway sent for key {key.thumbprint} (--eab-kid {binding.kid}): "
                f"{problem.detail or problem.code}. Check --eab-kid and --eab-hmac-key; a CA "
                f"whose keys bind one account only needs one per account key (--eab-file)."
            ) from problem
        raise


def _binding_missing(directory_url: str, thumbprint: str) -> str:
    return (f"The upstream CA ({directory_url}) creates accounts only with an External "
            f"Account Binding, and the gateway has none for key {thumbprint}: start it with "
            f"--eab-kid KID --eab-hmac-key KEY (the credentials the CA gave you), or give this "
            f"key its own in --eab-file.")


@attrs.frozen
class AccountRecovery:
    """
    What the upstream client does when the CA no longer knows an account
    it used to (``accountDoesNotExist`` for a known ``kid``: a CA that lost
    its state, as a restarted Pebble does): find or create the account of
    the key again, record its new URL, and sign again with it.

    Whatever the CA knew of the old account went with it: its pending and
    valid authorizations are recorded as expired in the same transaction,
    so that none is offered to a client again (a client told its name is
    still authorized would skip validating it, and its ``new-cert`` could
    not succeed).
    """

    store: IStore
    clock: IReactorTime
    agree_to_terms: bool = True
    bindings: AccountBindings = AccountBindings()

    async def __call__(self, upstream: UpstreamClient, key: AccountKey, stale_url: str) -> str:
        found = await upstream.find_account(key)
        if found is None:
            found = await create_upstream_account(upstream, self.bindings, key,
                                                  terms_of_service_agreed=self.agree_to_terms)
        now = format_timestamp(self.clock.seconds())
        for account in await self.store.list_accounts():
            if account.upstream_url == stale_url:
                gone = [a for status in (Status.PENDING, Status.VALID) for a in
                        await self.store.authorizations_with_status(status, account_id=account.id)]
                await self.store.write([
                    Update(Account, account.id, {"upstream_url": found.url}),
                    *(Update(Authorization, a.id, {"status": Status.EXPIRED, "updated_at": now})
                      for a in gone),
                ])
        log.warn("upstream lost account {stale}; re-attached as {url}", stale=stale_url,
                 url=found.url)
        url: str = found.url
        return url
