"""
The contract every challenge responder fulfils.
"""

from typing import Awaitable

from zope.interface import Attribute, Interface


class IResponder(Interface):
    """
    Makes one kind of challenge answerable, then cleans up.
    """

    challenge_type = Attribute("The ACME challenge type served, e.g. ``http-01``.")

    def publish(name: str, token: str, key_authorization: str) -> Awaitable[None]:
        """
        Make the challenge for DNS ``name`` (without ``*.``) answerable.

        :return: an awaitable that fires once the CA may validate (after any
            propagation wait).
        """

    def withdraw(name: str, token: str, key_authorization: str) -> Awaitable[None]:
        """
        Remove what `publish` provisioned; called after validation, also
        when it failed.

        :return: an awaitable.
        """
