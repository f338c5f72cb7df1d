"""
`gateway.process.devstack.listen_dns` serves UDP and TCP on one port
number.  With port 0 the system picks the UDP port, and that number can be
in use for TCP (CI met it: "Couldn't listen on 127.0.0.1:42828: Address
already in use" at a test's set-up); then another UDP port is tried.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import CannotListenError

from gateway.process.devstack import DNS_PORT_ATTEMPTS, LoopbackZone, listen_dns


class _Port:
    def __init__(self, number, protocol=None):
        self.number = number
        self.protocol = protocol
        self.stopped = False

    def getHost(self):
        return self

    @property
    def port(self):
        return self.number

    def stopListening(self):
        self.stopped = True


class _Reactor:
    """Hands out UDP ports 5000, 5001, ...; TCP refuses the numbers in ``taken``."""

    def __init__(self, taken):
        self.taken = set(taken)
        self.udp = []
        self.tcp = []

    def listenUDP(self, port, protocol, interface):
        self.udp.append(_Port(port or 5000 + len(self.udp), protocol))
        return self.udp[-1]

    def listenTCP(self, port, factory, interface):
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        self.tcp.append(_Port(port))
        return self.tcp[-1]


def test_a_udp_port_whose_number_is_taken_for_tcp_is_let_go_and_another_tried():
    reactor = _Reactor(taken={5000, 5001})
    udp, tcp = listen_dns(reactor, LoopbackZone())
    assert (udp.port, tcp.port) == (5002, 5002)
    assert [p.stopped for p in reactor.udp] == [True, True, False]
    assert len({id(p.protocol) for p in reactor.udp}) == 3


def test_the_system_picked_ports_are_tried_a_bounded_number_of_times():
    reactor = _Reactor(taken=range(5000, 5000 + DNS_PORT_ATTEMPTS))
    with pytest.raises(CannotListenError):
        listen_dns(reactor, LoopbackZone())
    assert len(reactor.udp) == DNS_PORT_ATTEMPTS
    assert all(p.stopped for p in reactor.udp)


def test_a_port_given_is_tried_once():
    reactor = _Reactor(taken={5353})
    with pytest.raises(CannotListenError):
        listen_dns(reactor, LoopbackZone(), 5353)
    assert [(p.port, p.stopped) for p in reactor.udp] == [(5353, True)]


def test_the_real_reactor_serves_both_on_one_port():
    from twisted.internet import reactor

    udp, tcp = listen_dns(reactor, LoopbackZone())
    try:
        assert udp.getHost().port == tcp.getHost().port != 0
    finally:
        udp.stopListening()
        tcp.stopListening()


class _RefusingTCPOnce:
    """The real reactor, except that its first ``listenTCP`` is refused."""

    def __init__(self, reactor):
        self._reactor = reactor
        self.refused = 0

    def listenUDP(self, *args, **kwargs):
        return self._reactor.listenUDP(*args, **kwargs)

    def listenTCP(self, port, factory, interface):
        if not self.refused:
            self.refused += 1
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return self._reactor.listenTCP(port, factory, interface=interface)


def test_the_real_reactor_takes_another_udp_port_after_a_refusal():
    """
    A UDP port let go keeps its protocol until a later turn of the reactor
    (``connectionLost`` is called later), so the next try needs a protocol
    of its own: reusing the first failed Twisted's ``transport == None``
    assertion, and the retry could never succeed (it errored a whole
    suite's shared stack once).
    """
    from twisted.internet import reactor

    refusing = _RefusingTCPOnce(reactor)
    udp, tcp = listen_dns(refusing, LoopbackZone())
    try:
        assert refusing.refused == 1
        assert udp.getHost().port == tcp.getHost().port != 0
    finally:
        udp.stopListening()
        tcp.stopListening()
