"""
Which External Account Binding a new upstream account gets.

ZeroSSL, Google Trust Services, SSL.com, Sectigo and others create ACME
accounts only with an External Account Binding (RFC 8555 §7.3.4): a MAC,
under a key the CA handed out, over the new account's key.  A v1 client
cannot send one.  The gateway does, for every account it creates upstream
(always with the client's own key): with ``--eab-kid``/``--eab-hmac-key``
for any key, or with the credentials ``--eab-file`` gives that key's
thumbprint (some CAs' keys bind one account only).

Pure: no I/O.
"""

from __future__ import annotations

from typing import Mapping, Optional

import attrs

from gateway.upstream.messages import ExternalAccountKey


@attrs.frozen
class AccountBindings:
    """
    The EAB credentials the operator gave.

    :ivar default: ``--eab-kid`` and ``--eab-hmac-key``, for any key.
    :ivar by_thumbprint: ``--eab-file``: a key's own credentials, which
        win over the default.
    """

    default: Optional[ExternalAccountKey] = None
    by_thumbprint: Mapping[str, ExternalAccountKey] = attrs.field(factory=dict)

    def for_key(self, thumbprint: str) -> Optional[ExternalAccountKey]:
        """
        The binding of a new account for the key with this thumbprint.
        """
        return self.by_thumbprint.get(thumbprint, self.default)

    @property
    def configured(self) -> bool:
        return self.default is not None or bool(self.by_thumbprint)
