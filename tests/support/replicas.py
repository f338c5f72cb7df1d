"""
Several gateway replicas on one state, as a hosting provider runs them:
``acme-gateway serve`` processes on one PostgreSQL database (or one SQLite
file with ``--workers``), behind the round-robin balancer of
`tests.support.balancer` — one for the v1 face, and one on the port Pebble
validates HTTP-01 at, spreading the CA's requests over every replica's
``--http01-listen`` (as port 80's challenge path would be routed to a
replica pool).  Synchronous, like `tests.support.gateway_process`.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from tests.support.balancer import Balancer
from tests.support.gateway_process import GatewayProcess
from tests.support.stack import free_port


class Replicas:
    """
    ``count`` gateway processes on ``state`` behind two balancers.

    :param password: the state password, given to each replica through
        ``ACME_GATEWAY_STATE_PASSWORD`` (never on its command line).
    :ivar url: the v1 balancer's base URL, which clients use.
    """

    def __init__(self, workdir: str, pebble, keys_dir: str, state: str, count: int = 3,
                 password: Optional[str] = None, extra_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.pebble = pebble
        env = {"ACME_GATEWAY_STATE_PASSWORD": password} if password else {}
        self.http01_ports = [free_port() for _ in range(count)]
        self.gateways: List[GatewayProcess] = [
            GatewayProcess(os.path.join(workdir, f"replica-{index}"), pebble, keys_dir,
                           state=state, env=env,
                           extra_args=["--http01-listen",
                                       f"tcp:{self.http01_ports[index]}:interface=127.0.0.1",
                                       *extra_args])
            for index in range(count)]
        self.v1 = Balancer(free_port(), [f"127.0.0.1:{g.port}" for g in self.gateways],
                           os.path.join(workdir, "balancer-v1.log"))
        self.http01 = Balancer(pebble.http_port,
                               [f"127.0.0.1:{port}" for port in self.http01_ports],
                               os.path.join(workdir, "balancer-http01.log"))

    @property
    def url(self) -> str:
        return self.v1.url

    @property
    def directory_url(self) -> str:
        return self.v1.url + "/directory"

    def start(self) -> "Replicas":
        self.http01.start()
        self.v1.start()
        for gateway in self.gateways:
            gateway.start()
        return self

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        self.v1.stop()
        self.http01.stop()

    def logs(self) -> str:
        return "\n".join(f"--- replica {index} ---\n{gateway.log()}"
                         for index, gateway in enumerate(self.gateways))

    def served(self) -> List[int]:
        """
        v1 requests the balancer sent to each replica.
        """
        counts = self.v1.counts()["requests"]
        return [counts[f"127.0.0.1:{g.port}"] for g in self.gateways]
