"""
The renewal inventory as the migration report shows it: each certificate
the gateway knows a client holds (issued through it, or imported by
``acme-gateway adopt``), when it expires, its profile, and the renewal
window its CA suggests (ARI) — flagged when that window opened early, so
the operator can have that machine renew now instead of waiting for its
own schedule.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import attrs

from gateway.store.records import Certificate, RenewalWindow


@attrs.frozen
class HeldCertificate:
    """
    One certificate of the inventory, with its suggested renewal window.

    :ivar thumbprint: the account key it belongs to (how the report ties
        it to a client).
    :ivar window_start: the CA's suggested window, when it was asked;
        ``opened_early`` when it opened early.
    :ivar window_error: why the CA could not be asked last time.
    """

    id: str
    thumbprint: str
    names: Tuple[str, ...]
    serial: str
    not_after: Optional[str]
    profile: Optional[str]
    adopted_from: Optional[str]
    ca: Optional[str]
    window_start: Optional[str] = None
    window_end: Optional[str] = None
    explanation_url: Optional[str] = None
    checked_at: Optional[str] = None
    opened_early: bool = False
    window_error: Optional[str] = None

    @classmethod
    def of(cls, certificate: Certificate, thumbprint: str,
           window: Optional[RenewalWindow]) -> "HeldCertificate":
        held = cls(id=certificate.id, thumbprint=thumbprint, names=certificate.names,
                   serial=certificate.serial, not_after=certificate.not_after,
                   profile=certificate.profile, adopted_from=certificate.adopted_from,
                   ca=certificate.directory_url)
        if window is None:
            return held
        return attrs.evolve(held, window_start=window.window_start, window_end=window.window_end,
                            explanation_url=window.explanation_url, checked_at=window.checked_at,
                            opened_early=window.opened_early, window_error=window.error)

    def as_json(self) -> Dict[str, Any]:
        return {
            "id": self.id, "thumbprint": self.thumbprint, "names": list(self.names),
            "serial": self.serial, "not_after": self.not_after, "profile": self.profile,
            "adopted_from": self.adopted_from, "ca": self.ca,
            "renewal_window": None if self.window_start is None else {
                "start": self.window_start, "end": self.window_end,
                "explanation_url": self.explanation_url, "checked_at": self.checked_at,
                "opened_early": self.opened_early},
            "renewal_window_error": self.window_error,
        }

    def text_lines(self) -> Tuple[str, ...]:
        head = (f"  {', '.join(self.names)}  serial {self.serial}  expires "
                f"{self.not_after or '(unknown)'}  profile {self.profile or '(CA default)'}  "
                f"account key {self.thumbprint}")
        lines = [head]
        if self.adopted_from:
            lines.append(f"    imported from {self.adopted_from}")
        if self.window_start is not None:
            flag = "  OPENED EARLY: renew now" if self.opened_early else ""
            lines.append(f"    renewal window (ARI) {self.window_start} to {self.window_end}"
                         f"{flag}" + (f" ({self.explanation_url})" if self.explanation_url else ""))
        elif self.window_error:
            lines.append(f"    renewal window (ARI) not known: {self.window_error}")
        return tuple(lines)


def inventory(certificates: Iterable[Certificate], windows: Iterable[RenewalWindow],
              thumbprints: Mapping[int, str]) -> Tuple[HeldCertificate, ...]:
    """
    The inventory's certificates (`gateway.store.interface.IStore.
    current_certificates`) with their windows and account thumbprints,
    those whose window opened early first.
    """
    by_certificate = {w.id: w for w in windows}
    held = [HeldCertificate.of(c, thumbprints.get(c.account_id, ""), by_certificate.get(c.id))
            for c in certificates]
    return tuple(sorted(held, key=lambda h: (not h.opened_early, h.not_after or "")))
