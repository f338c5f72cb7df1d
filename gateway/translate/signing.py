"""
The keys that sign upstream for each client key.

The gateway signs upstream with the client's own account key, so it must
hold it (the key store, ``--keys``); a correctly signed request by a key it
does not hold is refused, saying how to import it.  In managed mode
(``--unknown-keys managed``) such a client is served with a key of the
gateway's own, bound to the client key's thumbprint (`gateway.keys.managed`).
"""

from __future__ import annotations

from typing import Optional

import attrs

from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
from gateway.keys.managed import ManagedKeys
from gateway.translate.errors import Unauthorized


def key_not_in_store(thumbprint: str) -> Unauthorized:
    """
    The refusal for a correctly signed request whose key the gateway does
    not hold: it names the key and says how to import it.
    """
    return Unauthorized(
        f"The account key with JWK thumbprint {thumbprint} is not in the gateway's key store. "
        f"The gateway signs upstream with the client's own account key, so it must hold it: "
        f"copy the client's account key file (certbot: accounts/.../private_key.json; "
        f"dehydrated: account_key.pem; acme.sh: account.key) into the --keys directory and "
        f"restart the gateway (`acme-gateway keys list --keys DIR` shows what it loads)."
    )


@attrs.frozen
class SigningKeys:
    """
    The keys the gateway signs upstream with: the clients' own (the key
    store), and in managed mode (``--unknown-keys managed``) keys of its
    own bound to client keys it does not hold.
    """

    store: KeyStore
    managed: Optional[ManagedKeys] = None

    def get(self, thumbprint: str) -> Optional[AccountKey]:
        """
        The key that signs for the client key ``thumbprint`` right now, if
        any (a managed one only once made).
        """
        key = self.store.get(thumbprint)
        if key is None and self.managed is not None:
            key = self.managed.get(thumbprint)
        return key

    def client_key(self, thumbprint: str) -> Optional[AccountKey]:
        """
        The client's own key from the key store (never a managed one).
        """
        return self.store.get(thumbprint)

    def holds(self, thumbprint: str) -> bool:
        """
        Whether the gateway can sign upstream for ``thumbprint`` right now.
        """
        return self.get(thumbprint) is not None

    def is_managed(self, thumbprint: str) -> bool:
        """
        Whether the client key ``thumbprint`` is served with a managed key.
        """
        return thumbprint not in self.store and self.managed is not None

    async def obtain(self, thumbprint: str) -> AccountKey:
        """
        The key that signs for the client key ``thumbprint``: that very key
        from the key store, or in managed mode a gateway key bound to it
        (made on first use).

        :raises Unauthorized: when the store lacks the key and the gateway
            does not manage accounts.
        """
        key = self.store.get(thumbprint)
        if key is not None:
            return key
        if self.managed is not None:
            return await self.managed.obtain(thumbprint)
        raise key_not_in_store(thumbprint)
