"""
The built-in HTTP-01 responder (``--http01-listen``).

It answers ``/.well-known/acme-challenge/<token>`` with the key
authorization, only for tokens the gateway is validating right now, and 404
for anything else.  Route port 80's challenge path of the validated names to
it (a sidecar in the same pod, an nginx ``location``, an ingress rule).
"""

from __future__ import annotations

from typing import Dict

from twisted.web import resource
from zope.interface import implementer

from gateway.validation.interfaces import IResponder

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"


@implementer(IResponder)
class HTTP01Responder(resource.Resource):
    """
    A twisted.web resource holding the key authorizations being validated.
    """

    isLeaf = True
    challenge_type = "http-01"

    def __init__(self):
        super().__init__()
        self._answers: Dict[str, str] = {}

    @property
    def tokens(self) -> tuple:
        return tuple(self._answers)

    async def publish(self, name: str, token: str, key_authorization: str) -> None:
        self._answers[token] = key_authorization

    async def withdraw(self, name: str, token: str, key_authorization: str) -> None:
        self._answers.pop(token, None)

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            token = path[len(CHALLENGE_PREFIX):].decode("ascii", "replace")
            answer = self._answers.get(token)
            if answer is not None:
                return answer.encode("ascii")
        request.setResponseCode(404)
        return b"not found\n"
