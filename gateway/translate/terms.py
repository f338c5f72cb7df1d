"""
What a ``newOrder`` asks for besides its names: the certificate it renews
(ARI ``replaces``), the profile, and — for the order a renewal is planned
as — the certificate it was planned for.

Let's Encrypt exempts an ARI renewal (an order that ``replaces`` a
certificate of the same account) from every rate limit; the gateway signs
with that very account, so every order that renews a known certificate
carries it, when the CA offers ARI (``renewalInfo`` in its directory).  A
certificate of another CA (the gateway ran against another ``--upstream``
before) is not one this CA can replace; one imported by ``adopt`` names no
CA, and is tried (a CA that does not know it refuses, and the order is
made without ``replaces``: `gateway.translate.authorizations.create_order`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import attrs

from gateway.store import Certificate
from gateway.translate.context import Context
from gateway.translate.inventory import ari_cert_id


@attrs.frozen
class OrderTerms:
    """
    The extras of one ``newOrder``.

    :ivar replaces: the ARI certID of the certificate it renews, or `None`.
    :ivar profile: the profile to ask for, or `None` (the CA's default).
    :ivar planned_for: the id of the certificate whose renewal it is the
        planned order of, or `None`.
    """

    replaces: Optional[str] = None
    profile: Optional[str] = None
    planned_for: Optional[str] = None


def may_replace(context: Context, certificate: Certificate) -> bool:
    """
    Whether the current CA could take an order replacing ``certificate``:
    it issued it, or nobody knows which CA did (imported by ``adopt``).
    """
    return certificate.directory_url is None or context.is_current(certificate)


async def order_terms(context: Context, thumbprint: str, user_agent: str, names: Sequence[str],
                      renewing: Optional[Certificate] = None,
                      planned: bool = False) -> OrderTerms:
    """
    The terms of an order for ``names`` by the client with this key and
    User-Agent: the profile its rules choose, and, when it renews a known
    certificate, ``replaces`` (if the CA offers ARI) and, for a planned
    order, which certificate it was planned for.
    """
    profile = context.policy.profiles.choose(thumbprint, user_agent, names)
    replaces = None
    if renewing is not None and may_replace(context, renewing):
        directory = await context.upstream.directory()
        if directory.renewal_info is not None:
            replaces = ari_cert_id(renewing)
    return OrderTerms(replaces=replaces, profile=profile,
                      planned_for=renewing.id if planned and renewing is not None else None)
