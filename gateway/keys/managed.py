"""
Managed accounts (``--unknown-keys managed``): upstream keys the gateway
creates and keeps for clients whose own key it does not hold.

A fresh install has no account yet, so no key an operator could import.
In managed mode the gateway still verifies the client's JWS (the client
proves possession of *its* key), then signs upstream with a key of its own,
bound to the client key's thumbprint.  The CA checks key authorizations
against that gateway key, which the client cannot know, so the gateway
answers every challenge itself through its responders.

Keys live as PEM files (mode 0600) named after the client's thumbprint in a
directory of mode 0700; the database holds thumbprints only.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Optional, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer

from gateway.keys.jose import AccountKey

T = TypeVar("T")

#: Runs blocking work off the reactor thread: ``run(work, *args)`` fires
#: with ``work(*args)`` (the wiring gives the reactor's thread pool).
RunInThread = Callable[..., "defer.Deferred[Any]"]


def run_inline(work: Callable[..., T], *args: Any) -> "defer.Deferred[T]":
    """
    Run ``work`` at once, on the calling thread: for tools and tests that
    have no reactor threads.
    """
    return defer.maybeDeferred(work, *args)

_THUMBPRINT = re.compile(r"^[A-Za-z0-9_-]{43}$")


class ManagedKeys:
    """
    The managed-key directory, loaded once and extended as clients appear.

    :param run_in_thread: how a new key is made and written (off the
        reactor thread in a running gateway).
    """

    def __init__(self, directory: str, keys: Dict[str, AccountKey],
                 run_in_thread: RunInThread = run_inline):
        self.directory = directory
        self._keys = keys
        self._run_in_thread = run_in_thread

    @classmethod
    def open(cls, directory: str, run_in_thread: RunInThread = run_inline) -> "ManagedKeys":
        """
        Create the directory if needed and load the keys it holds (at
        start-up, before the reactor runs).
        """
        os.makedirs(directory, mode=0o700, exist_ok=True)
        keys = {}
        for entry in sorted(os.listdir(directory)):
            thumbprint, extension = os.path.splitext(entry)
            if extension != ".pem" or not _THUMBPRINT.match(thumbprint):
                continue
            with open(os.path.join(directory, entry), "rb") as f:
                private_key = serialization.load_pem_private_key(f.read(), None)
            if not isinstance(private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
                raise ValueError(f"{entry}: not an EC or RSA key")
            keys[thumbprint] = AccountKey.from_private_key(private_key)
        return cls(directory, keys, run_in_thread)

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, client_thumbprint: str) -> Optional[AccountKey]:
        """
        The upstream key bound to a client's key, if one was made.
        """
        return self._keys.get(client_thumbprint)

    def _create(self, client_thumbprint: str) -> AccountKey:
        private_key = ec.generate_private_key(ec.SECP256R1())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = os.path.join(self.directory, client_thumbprint + ".pem")
        temporary = path + ".tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        return AccountKey.from_private_key(private_key)

    async def obtain(self, client_thumbprint: str) -> AccountKey:
        """
        The upstream key for a client, created (off the reactor thread) and
        written durably on first use.
        """
        if not _THUMBPRINT.match(client_thumbprint):
            raise ValueError("not a JWK thumbprint")
        key = self._keys.get(client_thumbprint)
        if key is None:
            key = await self._run_in_thread(self._create, client_thumbprint)
            key = self._keys.setdefault(client_thumbprint, key)
        return key
