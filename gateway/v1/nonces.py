"""
The gateway's own v1 anti-replay nonces.

v1 clients sign nonces the gateway handed out in ``Replay-Nonce`` (on every
response, HEAD and errors included), never the upstream CA's: the upstream's
nonces are the gateway's business when it re-signs the request.  So the
gateway keeps its own single-use nonces, in memory.

Nonces are cheap to ask for (any HEAD mints one) and most are never used, so
memory must stay bounded no matter how many are issued: they expire after a
lifetime, expired ones are pruned from the front of an insertion-ordered map
(issue order is expiry order), and beyond a fixed capacity the oldest are
dropped.  A dropped or expired nonce fails like an unknown one, and a client
simply retries with the fresh nonce that came with its ``badNonce`` error.
Losing them all on a restart has the same harmless effect.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import attrs

from gateway.keys.jose import b64url

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime

#: Random bytes per nonce: 144 bits, which base64url-encodes to 24 characters
#: without padding.
NONCE_BYTES = 18


def _positive(instance: object, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.define
class NonceIssuer:
    """
    Issues and redeems single-use nonces.

    :ivar clock: anything with ``seconds()``, such as the reactor or a
        ``twisted.internet.task.Clock`` in tests.
    :ivar lifetime: seconds a nonce stays redeemable.
    :ivar capacity: the most nonces remembered at once; issuing beyond it
        forgets the oldest.
    """

    clock: "IReactorTime"
    lifetime: float = attrs.field(default=3600.0, validator=_positive)
    capacity: int = attrs.field(default=100_000, validator=_positive)
    # nonce -> expiry time, in issue order (and so in expiry order, as long as
    # the clock does not go backwards; if it does, pruning is merely late).
    _outstanding: "OrderedDict[str, float]" = attrs.field(
        init=False, factory=OrderedDict, repr=False
    )

    def __len__(self) -> int:
        """
        How many nonces are currently remembered (expired ones included until
        the next prune).
        """
        return len(self._outstanding)

    def _prune(self, now: float) -> None:
        outstanding = self._outstanding
        while outstanding:
            nonce, expires = next(iter(outstanding.items()))
            if expires > now:
                break
            outstanding.popitem(last=False)

    def issue(self) -> str:
        """
        Mint a fresh nonce and remember it until it is redeemed, expires or is
        pushed out by newer ones.
        """
        now = self.clock.seconds()
        self._prune(now)
        nonce = b64url(secrets.token_bytes(NONCE_BYTES))
        self._outstanding[nonce] = now + self.lifetime
        while len(self._outstanding) > self.capacity:
            self._outstanding.popitem(last=False)
        return nonce

    def redeem(self, nonce: str) -> bool:
        """
        Use up ``nonce``.

        :return: ``True`` exactly once for a nonce this issuer issued and that
            has not expired; ``False`` for anything unknown, replayed, expired
            or forgotten.
        """
        if not isinstance(nonce, str):
            return False
        now = self.clock.seconds()
        self._prune(now)
        expires = self._outstanding.pop(nonce, None)
        return expires is not None and expires > now
