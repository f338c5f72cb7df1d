"""
What every translated flow needs: the upstream client, the store, the key
store, a clock and the operator's policy, plus the binding of a verified v1
signer to its upstream account.

A migrating client never calls ``new-reg`` again: its account was made at
the old v1 CA, so its first request may be ``new-authz`` or ``new-cert``.
`Context.bind_account` therefore finds (or, when the CA has never seen the
key, creates) the upstream account on the first request signed by any key
in the store, and remembers it, so later requests cost no upstream lookup.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import attrs
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from gateway.jose import AccountKey
from gateway.keystore import KeyStore
from gateway.problems import V1Problem
from gateway.store import Account, DuplicateAccount
from gateway.store.records import format_timestamp
from gateway.upstream.client import UpstreamClient
from gateway.upstream.messages import UpstreamAccount
from gateway.v1.jws import VerifiedRequest

log = Logger()


@attrs.frozen
class Policy:
    """
    Operator choices that change how flows are translated.

    :ivar agree_to_terms: agree to the CA's terms of service upstream on a
        client's behalf when it sent no agreement (dehydrated 0.7 sends
        ``""`` and never updates it; migrating clients agreed long ago).
    """

    agree_to_terms: bool = True


@attrs.frozen
class BoundAccount:
    """
    A v1 signer resolved to its stored account and its upstream account.
    """

    record: Account
    upstream: UpstreamAccount

    @property
    def key(self) -> AccountKey:
        return self.upstream.key

    @property
    def thumbprint(self) -> str:
        return self.record.thumbprint


def key_not_in_store(thumbprint: str) -> V1Problem:
    """
    The refusal for a correctly signed request whose key the gateway does
    not hold: it names the key and says how to import it.
    """
    return V1Problem.unauthorized(
        f"The account key with JWK thumbprint {thumbprint} is not in the gateway's key store. "
        f"The gateway signs upstream with the client's own account key, so it must hold it: "
        f"copy the client's account key file (certbot: accounts/.../private_key.json; "
        f"dehydrated: account_key.pem; acme.sh: account.key) into the --keys directory and "
        f"restart the gateway (`acme-gateway keys list --keys DIR` shows what it loads)."
    )


@attrs.define
class Context:
    """
    The collaborators of every flow.
    """

    upstream: UpstreamClient
    store: Any  # gateway.store.IStore
    keys: KeyStore
    clock: Any
    policy: Policy = Policy()
    _locks: Dict[str, DeferredLock] = attrs.field(factory=dict, init=False)
    #: When each authorization was last read upstream (monotonic seconds).
    read_times: Dict[str, float] = attrs.field(factory=dict, init=False)
    #: Issuer id -> the id of the issuer above it in the chains seen, for the
    #: ``Link rel="up"`` of ``/acme/issuer-cert/<id>``.
    issuer_parents: Dict[str, str] = attrs.field(factory=dict, init=False)

    def now(self) -> str:
        """
        The current time as the store spells timestamps.
        """
        return format_timestamp(self.clock.seconds())

    def lock_for(self, name: str) -> DeferredLock:
        """
        A lock per name (a thumbprint, an order key), so that two concurrent
        requests of one client do not both create the same upstream object.
        """
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = DeferredLock()
        return lock

    def key_for(self, verified: VerifiedRequest) -> AccountKey:
        """
        The private key matching the verified signer.

        :raises V1Problem: ``unauthorized`` when the store lacks it.
        """
        key = self.keys.get(verified.thumbprint)
        if key is None:
            raise key_not_in_store(verified.thumbprint)
        return key

    async def upstream_for(self, account: Account) -> UpstreamAccount:
        """
        The upstream account of a stored account, without any upstream call
        when its URL is known.
        """
        key = self.keys.get(account.thumbprint)
        if key is None:
            raise key_not_in_store(account.thumbprint)
        if account.upstream_url is None:
            account = await self._attach_upstream(account, key)
        return UpstreamAccount(key=key, url=account.upstream_url, status=account.status)

    async def _attach_upstream(self, account: Account, key: AccountKey) -> Account:
        upstream = await self.upstream.find_account(key)
        if upstream is None:
            upstream = await self.upstream.new_account(
                key,
                contact=account.contact,
                terms_of_service_agreed=bool(account.agreement) or self.policy.agree_to_terms,
            )
            log.info("created upstream account {url} for key {thumbprint}",
                     url=upstream.url, thumbprint=key.thumbprint)
        return await self.store.update_account(account.id, upstream_url=upstream.url)

    async def bind_account(self, verified: VerifiedRequest, remote_ip: str) -> BoundAccount:
        """
        Resolve the signer of an account-bound request (anything but
        ``new-reg`` and ``revoke-cert``).

        :raises V1Problem: ``unauthorized`` for a key the store lacks or a
            deactivated registration.
        """
        key = self.key_for(verified)
        lock = self.lock_for("account:" + key.thumbprint)
        await lock.acquire()
        try:
            record = await self.store.account_by_thumbprint(key.thumbprint)
            if record is None:
                record = await self._adopt(key, verified, remote_ip)
            if record.status != "valid":
                raise V1Problem.unauthorized(
                    f"Registration is not valid, has status '{record.status}'"
                )
            upstream = await self.upstream_for(record)
            if record.upstream_url != upstream.url:
                record = await self.store.account_by_id(record.id)
        finally:
            lock.release()
        return BoundAccount(record=record, upstream=upstream)

    async def _adopt(self, key: AccountKey, verified: VerifiedRequest, remote_ip: str) -> Account:
        """
        First sight of a key the store holds: record the v1 registration the
        client made at the old CA, backed by the upstream account of the same
        key.
        """
        upstream = await self.upstream.find_account(key)
        if upstream is None:
            upstream = await self.upstream.new_account(
                key, terms_of_service_agreed=self.policy.agree_to_terms
            )
        try:
            return await self.store.create_account(
                thumbprint=key.thumbprint,
                public_jwk=key.public_jwk_json,
                contact=tuple(upstream.contact),
                agreement=None,
                initial_ip=remote_ip,
                upstream_url=upstream.url,
            )
        except DuplicateAccount:
            existing = await self.store.account_by_thumbprint(key.thumbprint)
            assert existing is not None
            return existing
