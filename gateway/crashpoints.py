"""
Named crash points: a test hook that ends the process abruptly at one chosen
moment, so the suite can prove that a crash there loses nothing and strands
no client.

``ACME_GATEWAY_CRASH_AT=<point>`` in the gateway's environment makes the
first `crash_point` call with that name exit the process at once, with
`CRASH_STATUS`, without unwinding, flushing or committing anything — as a
``kill -9`` at that instant would.  The variable is read once, at import, so
an unset hook costs one comparison with ``None``.

The points (each is where a multi-step write, or an upstream answer the
gateway has not stored yet, can be cut short):

``after-new-order``
    the CA answered ``newOrder``; nothing of the order is stored yet;
``after-finalize``
    the CA answered ``finalize``; the gateway has not stored that yet;
``order-row``, ``authorization-row``, ``challenge-row``, ``issuer-row``,
``account-row``, ``certificate-row``, ``order-attempt-row``
    a row of that kind is written, and the rest of its logical step (an
    order's authorizations, an authorization's challenges, a certificate
    after its issuers, the retired record of a key change) not yet.
"""

from __future__ import annotations

import os
from typing import Optional

#: The environment variable naming the crash point.
CRASH_AT_VARIABLE = "ACME_GATEWAY_CRASH_AT"

#: The exit status of a process ended at a crash point.
CRASH_STATUS = 86

_armed: Optional[str] = os.environ.get(CRASH_AT_VARIABLE) or None


def crash_point(name: str) -> None:
    """
    End the process now if ``name`` is the armed crash point.
    """
    if _armed is not None and name == _armed:
        os.write(2, f"acme-gateway: crash point {name}: exiting\n".encode("utf-8"))
        os._exit(CRASH_STATUS)
