"""
The gateway's own v1 anti-replay nonces.

v1 clients sign nonces the gateway handed out in ``Replay-Nonce`` (on every
response, HEAD and errors included), never the upstream CA's: the upstream's
nonces are the gateway's business when it re-signs the request.

A nonce carries its own proof: its issue time and an HMAC-SHA256 tag under a
key every process of the state shares (`gateway.store.interface.IStore.
secret`).  Issuing one costs one HMAC and writes nothing — HEADs and GETs,
which mint most nonces and never use them, stay cheap.  Redeeming one checks
the tag and the lifetime here (pure, ``check``), then marks it used, in one
of two ways, chosen once per process (`gateway.process.wiring.
serves_state_alone`):

- Several processes serve the state (``--workers`` > 1, PostgreSQL, where
  replicas may run beside this one): a nonce one of them issued must be
  accepted exactly once by any of them.  `NonceIssuer`'s nonces carry 64
  random bits, and redeeming one is one atomic insert into the store
  (`UsedNonces.use_nonce`; ``IStore.use_nonce``), which fails for the
  second process that tries: the replay check is the database's
  uniqueness, not any process's memory.  Used nonces are pruned from the
  store once they would have expired anyway.
- The process serves its state alone (SQLite, ``--workers 1``, the
  default): `InstanceNonceIssuer`'s nonces name the process instance that
  issued them (64 random bits drawn at its start, under the tag) and a
  serial number, and are redeemed in that process's memory — no hand-off
  to the store's thread and no write transaction per POST.  A nonce of
  another instance (this process's previous run, another process) or of the
  other kind is refused as ``badNonce``: no other process can redeem an
  instance's nonces, and its memory dies with it, so none is ever accepted
  twice.  Memory is bounded by ``max_redeemed`` serials, whatever the
  request rate and uptime: past it, the oldest serial redeemed is
  forgotten and every serial up to it refused (Boulder's nonce service does
  the same), so under heavy load a nonce left unused while more than
  ``max_redeemed`` newer ones were redeemed is refused before its lifetime.

A nonce that is unknown, forged, expired, already used or another instance's
fails alike, and a client simply retries with the fresh nonce that came with
its ``badNonce`` error (the acme library behind certbot retries once;
dehydrated takes a fresh nonce before every POST).
"""

from __future__ import annotations

import heapq
import hmac
import secrets
import struct
from typing import TYPE_CHECKING, Any, Awaitable, List, Optional, Protocol, Set

import attrs

from gateway.keys.jose import b64url, b64url_decode

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IReactorTime

#: Bytes of a nonce: 4 of issue time, 8 random, 12 of HMAC tag; 32
#: base64url characters.
_TIME_BYTES, _RANDOM_BYTES, _TAG_BYTES = 4, 8, 12
NONCE_BYTES = _TIME_BYTES + _RANDOM_BYTES + _TAG_BYTES

#: Bytes of an instance's nonce (`InstanceNonceIssuer`): 4 of issue time, 8
#: naming the instance, 8 of serial number, 12 of HMAC tag; 43 base64url
#: characters.
_INSTANCE_BYTES, _SERIAL_BYTES = 8, 8
INSTANCE_NONCE_BYTES = _TIME_BYTES + _INSTANCE_BYTES + _SERIAL_BYTES + _TAG_BYTES
_SERIAL = struct.Struct(">Q")

#: Serials an instance remembers as redeemed (`InstanceNonceIssuer.
#: max_redeemed`; Boulder's nonce service keeps as many): 6.3 MiB of Python
#: ints, set and heap when full (traced, CPython 3.11).
MAX_REDEEMED = 65536

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
    Issues nonces and checks the ones clients send back; each is redeemed
    once across every process of the state, at the store.

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

    def _signed(self, body: bytes) -> str:
        return b64url(body + self._tag(body))

    def _issue_time(self) -> bytes:
        return struct.pack(">I", int(self.clock.seconds()) & 0xFFFFFFFF)

    def issue(self) -> str:
        """
        A fresh nonce; nothing is written anywhere.
        """
        return self._signed(self._issue_time() + secrets.token_bytes(_RANDOM_BYTES))

    def _authentic(self, nonce: object, size: int) -> Optional[bytes]:
        """
        The body of ``nonce`` when it is the canonical base64url of ``size``
        bytes that end in its tag under this issuer's key; `None` else.
        """
        if not isinstance(nonce, str) or len(nonce) != (size * 4 + 2) // 3:
            return None
        try:
            raw = b64url_decode(nonce)
        except (ValueError, TypeError):
            return None
        if len(raw) != size or b64url(raw) != nonce:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        return body

    def _expiry(self, body: Optional[bytes]) -> Optional[int]:
        """
        When the nonce of ``body`` expires (Unix seconds), `None` if it has
        (or for no body).
        """
        if body is None:
            return None
        (issued,) = struct.unpack(">I", body[:_TIME_BYTES])
        expires = issued + self.lifetime
        if expires <= self.clock.seconds():
            return None
        return int(expires) + 1

    def check(self, nonce: object) -> Optional[int]:
        """
        When ``nonce`` expires (Unix seconds), if this gateway's key issued
        it and it has not expired; `None` for anything else.  Whether it
        was used already is for `redeem`.
        """
        return self._expiry(self._authentic(nonce, NONCE_BYTES))

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


@attrs.define
class InstanceNonceIssuer(NonceIssuer):
    """
    The nonces of a process that serves its state alone: each names this
    instance and carries a serial number, and is redeemed once in this
    process's memory, without the store.

    :ivar used: not consulted (`None` by default).
    :ivar instance: the bytes naming this instance, random at each start.
    :ivar max_redeemed: serials remembered as redeemed; past it the oldest
        is forgotten and every serial up to it refused (`redeem`).
    """

    used: Optional[UsedNonces] = None  # type: ignore[assignment]
    instance: bytes = attrs.field(factory=lambda: secrets.token_bytes(_INSTANCE_BYTES))
    max_redeemed: int = attrs.field(default=MAX_REDEEMED, validator=_positive)
    #: The last serial issued.
    _issued: int = attrs.field(default=0, init=False)
    #: Every serial up to this one is refused (the oldest ones forgotten).
    _floor: int = attrs.field(default=0, init=False)
    #: The serials redeemed above the floor, as a set and as a heap (the
    #: oldest first): at most ``max_redeemed`` of each.
    _redeemed: Set[int] = attrs.field(factory=set, init=False, repr=False)
    _oldest: List[int] = attrs.field(factory=list, init=False, repr=False)

    def issue(self) -> str:
        """
        A fresh nonce of this instance; nothing is written anywhere.
        """
        self._issued += 1
        return self._signed(self._issue_time() + self.instance + _SERIAL.pack(self._issued))

    def _own(self, nonce: object) -> Optional[bytes]:
        body = self._authentic(nonce, INSTANCE_NONCE_BYTES)
        if body is None or body[_TIME_BYTES:_TIME_BYTES + _INSTANCE_BYTES] != self.instance:
            return None
        return body

    def check(self, nonce: object) -> Optional[int]:
        """
        When ``nonce`` expires (Unix seconds), if this instance issued it
        and it has not expired; `None` for anything else.  Whether it was
        used already is for `redeem`.
        """
        return self._expiry(self._own(nonce))

    async def redeem(self, nonce: object) -> bool:
        """
        Use up ``nonce``, in this process's memory.

        :return: `True` exactly once for a nonce this instance issued and
            that has not expired (nor fallen below the forgotten serials);
            `False` for anything unknown, forged, expired, replayed or
            another instance's.
        """
        body = self._own(nonce)
        if self._expiry(body) is None:
            return False
        assert body is not None
        (serial,) = _SERIAL.unpack_from(body, _TIME_BYTES + _INSTANCE_BYTES)
        # Nothing is awaited from this test to the add: two requests of one
        # nonce, both on the reactor's thread, cannot both pass it.
        if serial <= self._floor or serial in self._redeemed:
            return False
        self._redeemed.add(serial)
        heapq.heappush(self._oldest, serial)
        if len(self._oldest) > self.max_redeemed:
            self._floor = heapq.heappop(self._oldest)
            self._redeemed.remove(self._floor)
        return True
