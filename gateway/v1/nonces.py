"""
The gateway's own v1 anti-replay nonces.

v1 clients sign nonces the gateway handed out in ``Replay-Nonce`` (on every
response, HEAD and errors included), never the upstream CA's: the upstream's
nonces are the gateway's business when it re-signs the request.

Several gateway processes may serve one client (``--workers``, replicas
behind a load balancer): a nonce one of them issued must be accepted exactly
once by any of them.  So a nonce carries its own proof: its issue time, 64
random bits, and an HMAC-SHA256 tag over both under a key every process of
the state shares (`gateway.store.interface.IStore.secret`).  Issuing one
costs one HMAC and writes nothing — HEADs and GETs, which mint most nonces
and never use them, stay cheap.  Redeeming one checks the tag and the
lifetime here (pure, `NonceIssuer.check`), then marks it used in the store
with one atomic insert (`UsedNonces.use_nonce`; ``IStore.use_nonce``),
which fails for the second process that tries: the replay check is the
database's uniqueness, not any process's memory.  Used nonces are pruned
from the store once they would have expired anyway.

A nonce that is unknown, forged, expired or already used fails alike, and a
client simply retries with the fresh nonce that came with its ``badNonce``
error.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from typing import TYPE_CHECKING, Any, Awaitable, Optional, Protocol

import attrs

from gateway.keys.jose import b64url, b64url_decode

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime

#: Bytes of a nonce: 4 of issue time, 8 random, 12 of HMAC tag; 32
#: base64url characters.
_TIME_BYTES, _RANDOM_BYTES, _TAG_BYTES = 4, 8, 12
NONCE_BYTES = _TIME_BYTES + _RANDOM_BYTES + _TAG_BYTES

#: The name of the shared nonce key in the store (`IStore.secret`).
NONCE_KEY_NAME = "v1-nonce-hmac"


def _positive(instance: object, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


class UsedNonces(Protocol):
    """
    Where redeemed nonces are remembered, for every process alike (the
    store).
    """

    def use_nonce(self, nonce: str, expires_at: int) -> Awaitable[bool]:
        """
        `True` the first time ``nonce`` is used, by any process.
        """


@attrs.define
class NonceIssuer:
    """
    Issues nonces and checks the ones clients send back.

    :ivar clock: anything with ``seconds()``, such as the reactor or a
        ``twisted.internet.task.Clock`` in tests.
    :ivar used: where redemptions are recorded (the store).
    :ivar key: the HMAC key, the same for every process of one state (from
        ``IStore.secret``); a random one serves a process alone.
    :ivar lifetime: seconds a nonce stays redeemable.
    """

    clock: "IReactorTime"
    used: UsedNonces
    key: bytes = attrs.field(factory=lambda: secrets.token_bytes(32), repr=False)
    lifetime: float = attrs.field(default=3600.0, validator=_positive)

    def _tag(self, body: bytes) -> bytes:
        # ``hmac.digest``: one call into OpenSSL, no ``HMAC`` object built
        # in Python (py-spy, HEAD /directory: ``hmac.new`` 1.9 % of the
        # samples, for the nonce every answer carries).
        return hmac.digest(self.key, body, "sha256")[:_TAG_BYTES]

    def issue(self) -> str:
        """
        A fresh nonce; nothing is written anywhere.
        """
        body = (struct.pack(">I", int(self.clock.seconds()) & 0xFFFFFFFF)
                + secrets.token_bytes(_RANDOM_BYTES))
        return b64url(body + self._tag(body))

    def check(self, nonce: object) -> Optional[int]:
        """
        When ``nonce`` expires (Unix seconds), if this gateway's key issued
        it and it has not expired; `None` for anything else.  Whether it
        was used already is for `redeem`.
        """
        if not isinstance(nonce, str) or len(nonce) != (NONCE_BYTES * 4 + 2) // 3:
            return None
        try:
            raw = b64url_decode(nonce)
        except (ValueError, TypeError):
            return None
        if len(raw) != NONCE_BYTES or b64url(raw) != nonce:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        (issued,) = struct.unpack(">I", body[:_TIME_BYTES])
        expires = issued + self.lifetime
        if expires <= self.clock.seconds():
            return None
        return int(expires) + 1

    async def redeem(self, nonce: object) -> bool:
        """
        Use up ``nonce``.

        :return: `True` exactly once — across every process of the state —
            for a nonce this gateway issued and that has not expired;
            `False` for anything unknown, forged, expired or replayed.
        """
        expires = self.check(nonce)
        if expires is None:
            return False
        assert isinstance(nonce, str)
        return bool(await self.used.use_nonce(nonce, expires))
