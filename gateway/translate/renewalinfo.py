"""
Polling the CA's suggested renewal windows (ARI, RFC 9773).

A CA that offers ``renewalInfo`` tells, per certificate, when it would
like it renewed: normally around two thirds of its lifetime, at once
after a revocation or an incident.  Legacy clients cannot ask; the
gateway asks for every certificate of its inventory (the newest of each
account's name sets, still valid, that this CA may know), twice a day or
as the CA's ``Retry-After`` says, and keeps each answer
(`gateway.store.RenewalWindow`) for the migration report, ``/status``
and ``/metrics``, flagging a window that opened early
(`gateway.translate.inventory.opened_early`): that client should renew
now, whatever its own schedule says.

`RenewalInfoPoller` is one small object owned by the wiring, run by a
timer of the serving process; `poll_due` asks for what is due, once.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.store import Certificate, Insert, IStore, RenewalWindow, Update
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.translate.inventory import ari_cert_id, opened_early
from gateway.upstream.client import UpstreamClient
from gateway.upstream.errors import UpstreamError, UpstreamProblem

log = Logger()

#: How often a certificate's window is asked for when the CA says nothing:
#: twice a day, as Let's Encrypt asks of ARI clients.
CHECK_INTERVAL = 12 * 3600.0
#: The bounds put on a CA's ``Retry-After`` (a CA saying 0 is not asked
#: in a loop; one saying a month is asked again within a day).
MIN_RETRY_AFTER = 60.0
MAX_RETRY_AFTER = 24 * 3600.0
#: When to ask again after a failure without ``Retry-After``.
RETRY_AFTER_FAILURE = 3600.0
#: When to ask again about a certificate the CA does not know (404).
RETRY_UNKNOWN = 7 * 86400.0


@attrs.define
class RenewalInfoPoller:
    """
    Asks the CA for the suggested renewal window of each certificate that
    is due (`poll_due`), and stores the answers.

    :ivar asked: how many windows it has asked for, for tests and logs.
    """

    upstream: UpstreamClient
    store: IStore
    clock: IReactorTime
    asked: int = attrs.field(default=0, init=False)

    def _now(self) -> str:
        return format_timestamp(self.clock.seconds())

    def _later(self, seconds: float) -> str:
        return format_timestamp(self.clock.seconds() + seconds)

    def _polled(self, certificate: Certificate) -> bool:
        """
        Whether the certificate is one to ask about: it has an issuer key
        id, is still valid, and belongs to this CA (or to none known).
        """
        if certificate.orphaned or not certificate.authority_key_id:
            return False
        if certificate.not_after and (
                timestamp_instant(certificate.not_after).timestamp() <= self.clock.seconds()):
            return False
        return certificate.directory_url in (None, self.upstream.directory_url)

    async def poll_due(self) -> int:
        """
        Ask for every window that is due (never asked, or past its
        ``next_check_at``); a CA without ``renewalInfo`` is not asked.

        :return: how many windows were asked for.
        """
        directory = await self.upstream.directory()
        if directory.renewal_info is None:
            return 0
        now = self.clock.seconds()
        count = 0
        for certificate in await self.store.current_certificates():
            if not self._polled(certificate):
                continue
            window = await self.store.renewal_window(certificate.id)
            if (window is not None and window.next_check_at is not None
                    and timestamp_instant(window.next_check_at).timestamp() > now):
                continue
            await self._ask(certificate, window)
            count += 1
        self.asked += count
        return count

    async def _ask(self, certificate: Certificate, window: Optional[RenewalWindow]) -> None:
        cert_id = ari_cert_id(certificate)
        assert cert_id is not None  # _polled: it has an issuer key id
        changes: Dict[str, Any]
        try:
            info = await self.upstream.renewal_info(cert_id)
        except UpstreamError as error:
            retry = RETRY_UNKNOWN if isinstance(error, UpstreamProblem) and error.status == 404 \
                else RETRY_AFTER_FAILURE
            if getattr(error, "retry_after", None):
                retry = max(retry, min(float(getattr(error, "retry_after")), MAX_RETRY_AFTER))
            changes = {"checked_at": self._now(), "next_check_at": self._later(retry),
                       "error": str(error)}
            log.info("renewalInfo for certificate {certificate} failed: {error}",
                     certificate=certificate.id, error=str(error))
        else:
            retry = CHECK_INTERVAL if info.retry_after is None else min(
                max(info.retry_after, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
            first = window.first_start if window is not None and window.first_start else info.start
            updated = RenewalWindow(
                id=certificate.id, account_id=certificate.account_id, cert_id=cert_id,
                window_start=info.start, window_end=info.end, first_start=first,
                explanation_url=info.explanation_url)
            early = opened_early(updated, certificate)
            changes = {"window_start": info.start, "window_end": info.end, "first_start": first,
                       "explanation_url": info.explanation_url, "checked_at": self._now(),
                       "next_check_at": self._later(retry), "opened_early": early, "error": None}
            if early and not (window is not None and window.opened_early):
                log.warn("the CA's renewal window of certificate {certificate} ({names}) opened "
                         "early: {start} to {end}{why}; its client should renew now",
                         certificate=certificate.id, names=", ".join(certificate.names),
                         start=info.start, end=info.end,
                         why=f" ({info.explanation_url})" if info.explanation_url else "")
        if window is None:
            await self.store.write([Insert(RenewalWindow(
                id=certificate.id, account_id=certificate.account_id, cert_id=cert_id,
                **changes))])
        else:
            await self.store.write([Update(RenewalWindow, certificate.id, changes)])
