"""
The ACME v1 wire shapes the gateway renders, as Boulder's v1 WFE served
them, built from the gateway's stored records.  Pure functions: no I/O.

URLs follow Boulder's own paths (some legacy clients hard-code them rather
than read the directory): ``/directory``, ``/acme/new-reg``,
``/acme/reg/<id>``, ``/acme/new-authz``, ``/acme/authz/<id>``,
``/acme/challenge/<authz>/<id>``, ``/acme/new-cert``, ``/acme/cert/<id>``,
``/acme/issuer-cert/<id>``, ``/acme/revoke-cert``, ``/acme/key-change``,
and ``/terms`` for the subscriber agreement.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import attrs

from gateway.status import Status
from gateway.store import Account, Authorization, Challenge

#: A v1 JSON object, as rendered.
JSONObject = Dict[str, Any]

#: Challenge types shown to v1 clients; others the CA offers (tls-alpn-01,
#: Pebble's experimental types) are left out: v1 clients predate them.
#: ``tls-sni-01`` is the gateway's own (`gateway.translate.tlssni`), offered
#: only when the gateway has a means to prove names upstream.
V1_CHALLENGE_TYPES = ("http-01", "dns-01", "tls-sni-01")


@attrs.frozen
class V1URLs:
    """
    Every URL the gateway hands to v1 clients, under one base (scheme, host
    and optional path prefix, no trailing slash).
    """

    base: str

    @property
    def directory(self) -> str:
        return f"{self.base}/directory"

    @property
    def new_reg(self) -> str:
        return f"{self.base}/acme/new-reg"

    def reg(self, account_id: int) -> str:
        return f"{self.base}/acme/reg/{account_id}"

    @property
    def new_authz(self) -> str:
        return f"{self.base}/acme/new-authz"

    def authz(self, authz_id: str) -> str:
        return f"{self.base}/acme/authz/{authz_id}"

    def challenge(self, authz_id: str, challenge_id: str) -> str:
        return f"{self.base}/acme/challenge/{authz_id}/{challenge_id}"

    @property
    def new_cert(self) -> str:
        return f"{self.base}/acme/new-cert"

    def cert(self, cert_id: str) -> str:
        return f"{self.base}/acme/cert/{cert_id}"

    def issuer(self, issuer_id: str) -> str:
        return f"{self.base}/acme/issuer-cert/{issuer_id}"

    @property
    def revoke_cert(self) -> str:
        return f"{self.base}/acme/revoke-cert"

    @property
    def key_change(self) -> str:
        return f"{self.base}/acme/key-change"

    @property
    def terms(self) -> str:
        return f"{self.base}/terms"


def link(url: str, rel: str) -> str:
    """
    One ``Link`` header value, with the relation quoted as clients expect.
    """
    return f'<{url}>;rel="{rel}"'


def directory(urls: V1URLs, upstream_meta: Mapping[str, Any]) -> JSONObject:
    """
    The v1 directory.  It has no ``newNonce`` and never contains the string
    ``newOrder`` (dehydrated's ``API=auto`` would switch to v2 on either).
    """
    meta: JSONObject = {"terms-of-service": urls.terms}
    website = upstream_meta.get("website")
    if isinstance(website, str):
        meta["website"] = website
    caa = upstream_meta.get("caaIdentities")
    if isinstance(caa, list) and all(isinstance(c, str) for c in caa):
        meta["caaIdentities"] = caa
    return {
        "new-reg": urls.new_reg,
        "new-authz": urls.new_authz,
        "new-cert": urls.new_cert,
        "revoke-cert": urls.revoke_cert,
        "key-change": urls.key_change,
        "meta": meta,
    }


def registration(account: Account, agreed_terms: Optional[str] = None) -> JSONObject:
    """
    A v1 registration object; ``id`` is an integer (dehydrated parses it as
    one and builds ``/acme/reg/<id>`` from it).

    ``agreement`` is the one the client sent, else ``agreed_terms``: the
    terms the gateway agreed to upstream on the client's behalf
    (``--agree-to-terms``).  Boulder showed ``agreement`` on every account
    that had agreed, and a client that migrated with its old account never
    sends one to the gateway; free_tls_certificates reads a registration
    without it as "must agree first" and stops unless a person answers.
    """
    body = {
        "id": account.id,
        "key": account.public_jwk,
        "contact": list(account.contact),
        "initialIp": account.initial_ip,
        "createdAt": account.created_at,
        "status": Status.VALID if account.status == Status.VALID else Status.DEACTIVATED,
    }
    if account.agreement or agreed_terms:
        body["agreement"] = account.agreement or agreed_terms
    return body


def _challenge_status(authorization_status: str, challenge_status: str) -> str:
    if authorization_status == Status.INVALID:
        return Status.INVALID
    if challenge_status == Status.PROCESSING:
        return Status.PENDING
    return challenge_status


def challenge(
    urls: V1URLs,
    authorization: Authorization,
    record: Challenge,
    thumbprint: str,
    error: Optional[JSONObject] = None,
    validation_record: Optional[Sequence[Mapping[str, Any]]] = None,
) -> JSONObject:
    """
    A v1 challenge: ``uri`` (not ``url``), the key authorization echoed as
    Boulder v1 did, ``processing`` shown as ``pending``.

    ``validationRecord`` carries the challenge ``uri`` as an object: stock
    dehydrated 0.7.0 with ``API=1`` reads the URI from there and dies without
    it; clients that do not know the member ignore it.  A challenge the
    gateway checked itself (tls-sni-01) shows Boulder's list of records
    instead (hostname, port, addresses), once checked.
    """
    uri = urls.challenge(authorization.id, record.id)
    body: JSONObject = {
        "type": record.type,
        "status": _challenge_status(authorization.status, record.status),
        "uri": uri,
        "token": record.token,
        "keyAuthorization": f"{record.token}.{thumbprint}",
    }
    if validation_record is not None:
        body["validationRecord"] = [dict(entry) for entry in validation_record]
    elif record.type != "tls-sni-01":
        body["validationRecord"] = {"uri": uri}
    if error is not None:
        body["error"] = error
    return body


def authorization(
    urls: V1URLs,
    record: Authorization,
    challenges: Sequence[Challenge],
    thumbprint: str,
    errors: Optional[Mapping[str, JSONObject]] = None,
    validation_records: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
) -> JSONObject:
    """
    A v1 authorization with ``combinations`` synthesised as one challenge per
    set (any single challenge suffices, as Boulder's 2021 v1 WFE said, and
    certbot 0.20 picks the one set its authenticator answers).
    """
    shown = [c for c in challenges if c.type in V1_CHALLENGE_TYPES]
    if record.wildcard:
        shown = [c for c in shown if c.type == "dns-01"]
    errors = errors or {}
    records = validation_records or {}
    value = ("*." + record.identifier) if record.wildcard else record.identifier
    body = {
        "identifier": {"type": "dns", "value": value},
        "status": record.status,
        "challenges": [
            challenge(urls, record, c, thumbprint, errors.get(c.id), records.get(c.id))
            for c in shown
        ],
        "combinations": [[i] for i in range(len(shown))],
    }
    if record.expires:
        body["expires"] = record.expires
    return body


def certificate_links(urls: V1URLs, issuer_ids: Iterable[str]) -> List[str]:
    """
    The ``Link rel="up"`` of a leaf: its first issuer, if any.
    """
    issuer_ids = list(issuer_ids)
    return [link(urls.issuer(issuer_ids[0]), "up")] if issuer_ids else []
