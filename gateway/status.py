"""
The status values of ACME objects, one vocabulary for every layer.

RFC 8555 §7.1.6 gives accounts, orders, authorizations and challenges one
set of status words, and ACME v1 used the same ones; the gateway stores
them as the CA spelled them and shows them to v1 clients.  `Status` is a
`str` enum, so a member equals the word (``Status.VALID == "valid"``): rows
and JSON documents keep plain strings, and code compares against members,
never against literals.

The gateway adds one word of its own, for accounts: `Status.RETIRED`, the
record a key change leaves behind for the old key.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """
    The status of an account, order, authorization or challenge.
    """

    PENDING = "pending"
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"
    DEACTIVATED = "deactivated"
    EXPIRED = "expired"
    REVOKED = "revoked"
    #: The gateway's own: an account record whose key a key change replaced.
    RETIRED = "retired"


#: Statuses after which an authorization never changes again by itself.
AUTHORIZATION_FINAL = frozenset({Status.VALID, Status.INVALID, Status.DEACTIVATED,
                                 Status.EXPIRED, Status.REVOKED})
#: Statuses after which an order never changes again by itself.
ORDER_FINAL = frozenset({Status.VALID, Status.INVALID})
