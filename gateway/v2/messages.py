"""
The ACME v2 wire shapes the v2 face renders, as Let's Encrypt's Boulder
served them to draft-era clients (2018-2019) and as RFC 8555 has them,
built from the gateway's stored records.  Pure functions: no I/O.

Every URL is the gateway's, under ``<base>/v2/``: a client never sees the
upstream CA's URLs (it could not use them: the CA would want its own
nonces, and the gateway's state would not follow).
"""

from __future__ import annotations

import base64
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import attrs

from gateway.status import Status
from gateway.store import Account, Authorization, Challenge, Order

JSONObject = Dict[str, Any]

#: The gateway's own account URLs end in ``/v2/acct/<id>``.
_ACCOUNT_PATH = re.compile(r"/v2/acct/([0-9]{1,18})$")


@attrs.frozen
class V2URLs:
    """
    Every URL the v2 face hands out, under one base (scheme, host, optional
    path prefix; no trailing slash).
    """

    base: str

    def _at(self, path: str) -> str:
        return f"{self.base}/v2/{path}"

    @property
    def directory(self) -> str:
        return self._at("directory")

    @property
    def new_nonce(self) -> str:
        return self._at("new-nonce")

    @property
    def new_account(self) -> str:
        return self._at("new-acct")

    @property
    def new_order(self) -> str:
        return self._at("new-order")

    @property
    def revoke_cert(self) -> str:
        return self._at("revoke-cert")

    @property
    def key_change(self) -> str:
        return self._at("key-change")

    def account(self, account_id: int) -> str:
        return self._at(f"acct/{account_id}")

    def order(self, order_id: str) -> str:
        return self._at(f"order/{order_id}")

    def finalize(self, order_id: str) -> str:
        return self._at(f"finalize/{order_id}")

    def authz(self, authz_id: str) -> str:
        return self._at(f"authz/{authz_id}")

    def challenge(self, authz_id: str, challenge_id: str) -> str:
        return self._at(f"chall/{authz_id}/{challenge_id}")

    def cert(self, cert_id: str) -> str:
        return self._at(f"cert/{cert_id}")

    def account_id_of(self, kid: str) -> Optional[int]:
        """
        The gateway account id a ``kid`` names when it is one of the
        gateway's own account URLs (under any base: a client may have
        reached the gateway under another name), else `None`.
        """
        match = _ACCOUNT_PATH.search(kid)
        return int(match.group(1)) if match else None


def link(url: str, rel: str) -> str:
    return f'<{url}>;rel="{rel}"'


def directory(urls: V2URLs, upstream_meta: Mapping[str, Any]) -> JSONObject:
    """
    The v2 directory.  ``newNonce`` is what tells a client that speaks both
    versions (certbot 0.22 to 1.x) that this is v2.  ``meta`` is the CA's
    (terms of service, website, CAA identities), so a client agrees to the
    terms of the CA that really serves it.
    """
    meta: JSONObject = {}
    for name in ("termsOfService", "website"):
        value = upstream_meta.get(name)
        if isinstance(value, str):
            meta[name] = value
    caa = upstream_meta.get("caaIdentities")
    if isinstance(caa, list) and all(isinstance(c, str) for c in caa):
        meta["caaIdentities"] = caa
    return {
        "newNonce": urls.new_nonce,
        "newAccount": urls.new_account,
        "newOrder": urls.new_order,
        "revokeCert": urls.revoke_cert,
        "keyChange": urls.key_change,
        "meta": meta,
    }


def account(record: Account) -> JSONObject:
    """
    A v2 account: its key, contact and status (Boulder's draft-era shape).
    """
    return {
        "key": record.public_jwk,
        "contact": list(record.contact),
        "status": Status.VALID if record.status == Status.VALID else Status.DEACTIVATED,
    }


def _identifier(name: str) -> JSONObject:
    return {"type": "dns", "value": name}


def order(urls: V2URLs, record: Order, authorization_ids: Sequence[str],
          certificate_id: Optional[str], error: Optional[JSONObject] = None) -> JSONObject:
    """
    A v2 order, with the CA's status; ``certificate`` once the gateway
    holds the certificate.
    """
    body: JSONObject = {
        "status": record.status,
        "identifiers": [_identifier(name) for name in record.identifiers],
        "authorizations": [urls.authz(i) for i in authorization_ids],
        "finalize": urls.finalize(record.id),
    }
    if record.expires:
        body["expires"] = record.expires
    if certificate_id is not None and record.status == Status.VALID:
        body["certificate"] = urls.cert(certificate_id)
    if error is not None:
        body["error"] = error
    return body


def challenge(urls: V2URLs, authorization: Authorization, record: Challenge,
              error: Optional[JSONObject] = None) -> JSONObject:
    """
    A v2 challenge: ``url`` (not v1's ``uri``), the CA's status.
    """
    body: JSONObject = {
        "type": record.type,
        "url": urls.challenge(authorization.id, record.id),
        "token": record.token,
        "status": record.status,
    }
    if error is not None:
        body["error"] = error
    return body


def authorization(urls: V2URLs, record: Authorization, challenges: Sequence[Challenge],
                  errors: Optional[Mapping[str, JSONObject]] = None) -> JSONObject:
    """
    A v2 authorization: the identifier without ``*.`` and ``wildcard``
    for a wildcard, as RFC 8555 (and Boulder) show it; the CA's challenges.
    """
    errors = errors or {}
    body: JSONObject = {
        "identifier": _identifier(record.identifier),
        "status": record.status,
        "challenges": [challenge(urls, record, c, errors.get(c.id)) for c in challenges],
    }
    if record.expires:
        body["expires"] = record.expires
    if record.wildcard:
        body["wildcard"] = True
    return body


def pem_chain(leaf: bytes, issuers: Sequence[bytes]) -> bytes:
    """
    The certificate and its issuers as ``application/pem-certificate-chain``.
    """
    blocks: List[str] = []
    for der in (leaf, *issuers):
        text = base64.b64encode(der).decode("ascii")
        lines = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
        blocks.append(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    return "".join(blocks).encode("ascii")
