"""A NATS cluster on loopback for development and tests: N nats-server processes with routes between them.

Each node is an :class:`~backworks.local.embedded.EmbeddedNats` with its own client port, cluster (route)
port, ``server_name`` and JetStream store directory under ``base/<name>``. Every node lists every other
node's route, so any node can be killed and restarted and rejoin. The cluster is ready once JetStream has a
meta leader (an account-info request succeeds), which takes a few seconds after the processes accept
connections.

This is what ``backworks nats --cluster 3`` runs; production nodes use the configuration files in
``ops/nats/`` instead (same routes and JetStream settings, real hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from backworks.local.embedded import EmbeddedNats, wait_accepted
from backworks.local.errors import NotReady
from backworks.local.ports import LOOPBACK, free_port
from backworks.pipeline import nats_auth
from backworks.pipeline.errors import EmbeddedNatsError
from backworks.pipeline.keyring import ROUTE_USER, Keyring
from backworks.pipeline.nats_auth import NatsAuth
from backworks.pipeline.permissions import ADMIN, Identity

if TYPE_CHECKING:
    from backworks.local.streams import StreamState

CLUSTER_NAME = "backworks"
READY_TIMEOUT = 60.0
"""Seconds to wait for the JetStream meta leader after every node accepts connections."""
LAME_DUCK_GRACE = "1s"
"""How long a node in lame duck mode waits, after telling its clients to move, before it closes their connections
(nats-server's default is 10 s, sized for thousands of clients; a loopback cluster has a dozen)."""
LAME_DUCK_DURATION = "30s"
"""Over how long (grace included) a node in lame duck mode closes its client connections: nats-server's minimum."""
LAME_DUCK_WAIT = 4.0
"""Seconds ``hand_over`` lets a node in lame duck mode work (move what it still leads, stop JetStream, tell its
clients, close some of them) before it stops it, closing the connections left at once."""


def node_name(index: int) -> str:
    return f"n{index + 1}"


def cluster_block(name: str, host: str, route_port: int, routes: list[int], route_secret: str = "") -> str:
    """The nats-server configuration that makes a node part of the cluster.

    With ``route_secret``, routes are authenticated: a node accepts a route only with that password (the config
    files are owner-only), so no other process can join the cluster and see its traffic.
    """
    login = f"{ROUTE_USER}:{route_secret}@" if route_secret else ""
    peers = ", ".join(f'"nats-route://{login}{host}:{port}"' for port in routes)
    auth = f'  authorization {{\n    user: {ROUTE_USER}\n    password: "{route_secret}"\n  }}\n' if route_secret else ""
    return (
        f"server_name: {name}\n"
        f'lame_duck_grace_period: "{LAME_DUCK_GRACE}"\nlame_duck_duration: "{LAME_DUCK_DURATION}"\n'
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: {host}:{route_port}\n{auth}  routes: [{peers}]\n}}\n"
    )


class LocalCluster:
    """``size`` routed nats-server processes with JetStream; ``seeds`` are their client URLs."""

    def __init__(
        self,
        base: Path,
        size: int = 3,
        host: str = LOOPBACK,
        ports: list[int] | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.base = base
        self.host = host
        client_ports = ports or [free_port(host) for _ in range(size)]
        if len(client_ports) != size:
            raise ValueError(f"{size} nodes need {size} client ports, got {len(client_ports)}")
        self.route_ports = [free_port(host) for _ in range(size)]
        self.keyring = keyring or nats_auth.keyring()
        secret = self.keyring.route_secret()
        self.nodes: list[EmbeddedNats] = []
        for index in range(size):
            name = node_name(index)
            others = [port for other, port in enumerate(self.route_ports) if other != index]
            self.nodes.append(
                EmbeddedNats(
                    base / name / "jetstream",
                    port=client_ports[index],
                    host=host,
                    log_file=base / name / "nats-server.log",
                    extra_config=cluster_block(name, host, self.route_ports[index], others, secret),
                    keyring=self.keyring,
                )
            )

    @property
    def seeds(self) -> list[str]:
        """Every node's client URL: what services connect with (nats-py fails over between them)."""
        return [node.url for node in self.nodes]

    def start(self, timeout: float = READY_TIMEOUT) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            self.wait_for_jetstream(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_jetstream(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until JetStream answers through every running node (a meta leader is elected)."""
        servers = [node.url for node in self.nodes if node.running]
        # Its own thread and loop: callable from synchronous code and from inside a running event loop alike.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, _jetstream_ready(servers, timeout, self.nodes[0].auth(ADMIN))).result()

    def wait_current(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until every declared Backworks stream has a leader and every replica is current.

        The step between two nodes of a rolling restart: restarting the next node before the last one
        caught up could leave a stream without a quorum. JetStream must first answer through every running node
        (the one just restarted included): until it rejoined, a stream leader may still count it current.
        """
        self.wait_for_jetstream(timeout)
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, _streams_current(self.seeds, timeout)).result()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def reload(self) -> None:
        """Every running node applies the keyring's identities again (SIGHUP)."""
        for node in self.nodes:
            node.reload()

    def admit(self, identities: Iterable[Identity]) -> None:
        """Trust ``identities`` on every node; returns once a node accepts them."""
        wanted = list(identities)
        if not self.keyring.admit(wanted):  # rewrote auth.conf and signalled every node
            return
        running = [node for node in self.nodes if node.running]
        if wanted and running:
            wait_accepted(running[0].url, running[0].auth(wanted[-1].name), READY_TIMEOUT)

    def kill(self, index: int) -> None:
        """SIGKILL one node (its store stays: ``restart`` brings it back with its data)."""
        process = self.nodes[index].process
        if process is not None:
            process.kill()
            process.wait()
            self.nodes[index].process = None

    def hand_over(self, index: int, timeout: float = READY_TIMEOUT, lame_duck: bool = False) -> list[str]:
        """Stop a running node the planned way; returns the groups whose leaders moved off it.

        Every replicated Backworks stream and consumer it leads is led elsewhere first (``handover.move_leaders``,
        asked through the other nodes), then it stops (SIGTERM): its clients reconnect to another node at once.

        ``lame_duck``: between the two, lame duck mode (SIGUSR2) for ``LAME_DUCK_WAIT`` s. Measured worse here: the
        node stops its JetStream at once but keeps its clients connected, so the KV watches and heartbeat writes
        that went through it fall silent until they are closed (a rolling restart answered 315 requests "no live
        replica" that way, against 0-4 failed requests without it).
        """
        node = self.nodes[index]
        process = node.process
        if process is None or process.poll() is not None:
            return []
        others = [other.url for other in self.nodes if other is not node and other.running]
        moving = _move_leaders(others, node_name(index), timeout, node.auth(ADMIN))
        with ThreadPoolExecutor(1) as worker:
            moved = worker.submit(asyncio.run, moving).result()
        if lame_duck:
            os.kill(process.pid, signal.SIGUSR2)
            with contextlib.suppress(subprocess.TimeoutExpired):  # still closing clients: ``stop`` below ends it
                process.wait(LAME_DUCK_WAIT)
        node.stop()
        return moved

    def restart(self, index: int, attempts: int = 10, planned: bool = True, lame_duck: bool = False) -> None:
        """Start a node again on the same ports and store; a running one is first handed over (``hand_over``)
        unless ``planned`` is False (then it is stopped with SIGTERM).

        Retried for a few seconds: the ports of the node that just exited can take a moment to be free.
        """
        if planned:
            self.hand_over(index, lame_duck=lame_duck)
        self.nodes[index].stop()
        for attempt in range(attempts):
            try:
                self.nodes[index].start()
                return
            except EmbeddedNatsError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def pause(self, index: int) -> None:
        """SIGSTOP one node: a partition as the others see it (it holds its sockets but answers nothing)."""
        self._signal(index, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        self._signal(index, signal.SIGCONT)

    def _signal(self, index: int, signum: int) -> None:
        process = self.nodes[index].process
        if process is not None:
            os.kill(process.pid, signum)

    def index_of(self, server_name: str) -> int:
        """The node called ``server_name`` (``n1``, ``n2``…), as JetStream names stream leaders."""
        for index in range(len(self.nodes)):
            if node_name(index) == server_name:
                return index
        raise KeyError(server_name)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


async def _move_leaders(servers: list[str], node: str, timeout: float, auth: NatsAuth) -> list[str]:
    from backworks.local.handover import step_down

    return await step_down(servers, node, timeout, auth)


async def _quiet(exc: Exception) -> None:
    """nats-py logs every failed attempt at ERROR by default; the caller reports the last one instead."""


async def _jetstream_ready(servers: list[str], timeout: float, auth: NatsAuth | None = None) -> None:
    import nats
    from nats.errors import Error as NatsError

    deadline = time.monotonic() + timeout
    last = "no answer"
    for server in servers:
        while True:
            try:
                client = await nats.connect(
                    servers=[server],
                    connect_timeout=2,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    error_cb=_quiet,
                    **(auth.options() if auth else {}),
                )
                try:
                    await client.jetstream().account_info()
                    break
                finally:
                    await client.close()
            except (NatsError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise NotReady(f"the NATS cluster's JetStream did not become ready within {timeout:.0f} s ({last})")
            await asyncio.sleep(0.2)


def _caught_up(state: StreamState) -> bool:
    if state.replicas <= 1:
        return True
    replicas_seen = len(state.peers) >= state.replicas - 1
    return state.leader is not None and replicas_seen and all(peer.current for peer in state.peers)


async def _streams_current(servers: list[str], timeout: float) -> None:
    from backworks.local.streams import stream_states

    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            states = [state for state in await stream_states(servers) if state.declared]
            behind = [
                state.name
                for state in states
                if state.replicas > 1
                and (
                    state.leader is None
                    or len(state.peers) < state.replicas - 1
                    or not all(p.current and not p.offline and not p.lag for p in state.peers)
                )
            ]
            if not behind:
                return
            last = f"not current: {', '.join(behind)}"
        except Exception as exc:  # a node still starting: the next round asks again
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise NotReady(f"the NATS cluster's streams were not current within {timeout:.0f} s ({last})")
        await asyncio.sleep(0.25)
