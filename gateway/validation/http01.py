"""
The built-in HTTP-01 responder (``--http01-listen``).

It answers ``/.well-known/acme-challenge/<token>`` with the key
authorization, only for tokens the gateway is validating right now, and 404
for anything else.  Route port 80's challenge path of the validated names to
it (a sidecar in the same pod, an nginx ``location``, an ingress rule).

Several gateway processes (``--workers``, replicas behind a load balancer)
each run a responder, and the CA's request may reach any of them: so a
published answer is also written to the state (`SharedAnswers`, the store),
and a responder that does not hold a token itself looks it up there.
"""

from __future__ import annotations

from typing import Any, Awaitable, Dict, List, Optional, Protocol

from twisted.web import resource, server
from zope.interface import implementer

from gateway.validation.interfaces import IResponder

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"

#: A published answer another process may serve for at most this long
#: (its publisher withdraws it sooner, unless it died first).
ANSWER_LIFETIME_SECONDS = 3600


class SharedAnswers(Protocol):
    """
    Answers every process of the state sees (the store).
    """

    def publish_answer(self, token: str, key_authorization: str,
                       expires_at: int) -> Awaitable[None]: ...

    def withdraw_answer(self, token: str) -> Awaitable[None]: ...

    def answer_for(self, token: str) -> Awaitable[Optional[str]]: ...


@implementer(IResponder)
class HTTP01Responder(resource.Resource):
    """
    A twisted.web resource holding the key authorizations being validated.

    :param shared: the state's answers, for several processes (`None`: this
        process answers alone).
    :param clock: dates shared answers (``seconds()``).
    """

    isLeaf = True
    challenge_type = "http-01"

    def __init__(self, shared: Optional[SharedAnswers] = None, clock: Any = None):
        super().__init__()
        self._answers: Dict[str, str] = {}
        self._shared = shared
        self._clock = clock

    @property
    def tokens(self) -> tuple:
        return tuple(self._answers)

    async def publish(self, name: str, token: str, key_authorization: str) -> None:
        self._answers[token] = key_authorization
        if self._shared is not None and self._clock is not None:
            await self._shared.publish_answer(
                token, key_authorization, int(self._clock.seconds()) + ANSWER_LIFETIME_SECONDS)

    async def withdraw(self, name: str, token: str, key_authorization: str) -> None:
        self._answers.pop(token, None)
        if self._shared is not None:
            await self._shared.withdraw_answer(token)

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            token = path[len(CHALLENGE_PREFIX):].decode("ascii", "replace")
            answer = self._answers.get(token)
            if answer is not None:
                return answer.encode("ascii")
            if self._shared is not None:
                self._answer_from_state(request, token)
                return server.NOT_DONE_YET
        request.setResponseCode(404)
        return b"not found\n"

    def _answer_from_state(self, request, token: str) -> None:
        from twisted.internet.defer import Deferred

        async def look_up() -> Optional[str]:
            assert self._shared is not None
            return await self._shared.answer_for(token)

        gone: List[bool] = []

        def answer(found: Optional[str]) -> None:
            if gone:
                return
            if found is None:
                request.setResponseCode(404)
                request.write(b"not found\n")
            else:
                request.write(found.encode("ascii"))
            request.finish()

        def failed(failure) -> None:
            if gone:
                return
            request.setResponseCode(500)
            request.write(b"state unavailable\n")
            request.finish()

        request.notifyFinish().addErrback(lambda failure: gone.append(True))
        Deferred.fromCoroutine(look_up()).addCallbacks(answer, failed).addErrback(
            lambda failure: None)
