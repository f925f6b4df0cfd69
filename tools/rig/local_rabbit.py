"""A three-node RabbitMQ cluster with the MQTT plugin on loopback, in a folder of its own.

Used by the fleet tests (tests/fleet/fleet_fixtures.py) and `egate bench fleet`. Debian's `rabbitmq-server`
is enough; nothing is installed or started system-wide:

- one `epmd` bound to 127.0.0.1 on a free port (ERL_EPMD_PORT), so the cluster does not meet a
  system epmd or another test run's nodes;
- per node: its own RABBITMQ_NODENAME (`<name>N@localhost`), AMQP and distribution ports, data, log,
  config and pid paths, and an MQTT listener on 127.0.0.1;
- a shared Erlang cookie under a common HOME, classic-config peer discovery listing all nodes;
- `mqtt.allow_anonymous = false` and quorum queues for MQTT sessions: a persistent session survives
  the loss of one node only with quorum queues.

Users and topic permissions are made with `rabbitmqctl` (`add_user`, `set_topic_permissions`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from egate.tools.rig.local_broker import free_port
from egate.tools.rig.local_service import LocalService

_LOW_PORTS = (20000, 32000)


def low_free_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999). A killed node's listener must be able
    to bind again on restart, and a client retrying to connect to a dead loopback port can be handed
    that very port as its own source port (a TCP self-connect), keeping it busy."""
    import random

    for _ in range(200):
        port = random.randrange(*_LOW_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def _sbin() -> Path:
    # The Debian wrapper in /usr/sbin switches to the `rabbitmq` user and fixed paths; the real scripts
    # honour RABBITMQ_* environment variables, which is what a private cluster needs.
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin"))
    if not found:
        raise RuntimeError("RabbitMQ is not installed (apt-get install rabbitmq-server)")
    return Path(found[-1])


def rabbitmq_available() -> bool:
    return bool(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin")) and shutil.which("epmd") is not None


@dataclass
class RabbitNode:
    index: int
    name: str  # rabbitN@localhost
    amqp_port: int
    dist_port: int
    mqtt_port: int
    base: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster(LocalService):
    """`with RabbitCluster(dir) as c:` starts epmd and three nodes joined into one cluster.

    `c.nodes[i].mqtt_port` are the MQTT listeners; `c.kill(i)` / `c.start_node(i)` take one node down
    (SIGKILL) and bring it back; `c.add_user(...)`, `c.set_topic_permissions(...)` manage access.
    """

    def __init__(self, workdir: Path, *, nodes: int = 3, prefix: str = "egt", memory_mb: int = 400) -> None:
        """`memory_mb`: each node's memory high watermark (publishers are blocked above it)."""
        self.workdir = Path(workdir)
        self.memory_mb = memory_mb
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.epmd_port = low_free_port()
        self.home = self.workdir / "home"
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        self._epmd: subprocess.Popen[bytes] | None = None
        # A unique node name prefix per cluster: node names must not collide on this host's epmd.
        tag = f"{prefix}{os.getpid()}x{secrets.token_hex(2)}"
        self.nodes = [
            RabbitNode(
                i, f"{tag}{i}@localhost", low_free_port(), low_free_port(), low_free_port(), self.workdir / f"node{i}"
            )
            for i in range(nodes)
        ]
        for node in self.nodes:
            self._write_node_config(node)

    # ------------------------------------------------------------------ config

    def _write_node_config(self, node: RabbitNode) -> None:
        node.base.mkdir(parents=True, exist_ok=True)
        (node.base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        peers = "\n".join(f"cluster_formation.classic_config.nodes.{n.index + 1} = {n.name}" for n in self.nodes)
        (node.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}",
                    f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}",
                    "mqtt.allow_anonymous = false",
                    "mqtt.durable_queue_type = quorum",
                    "mqtt.exchange = amq.topic",
                    # Unacknowledged messages in flight to one MQTT subscriber (default 10): a collector
                    # that acknowledges after each database commit needs a deeper window.
                    "mqtt.prefetch = 500",
                    "loopback_users = none",
                    "cluster_formation.peer_discovery_backend = classic_config",
                    peers,
                    "log.console = false",
                    "log.file.level = warning",
                    # Room for a few test clusters on a shared machine.
                    f"vm_memory_high_watermark.absolute = {self.memory_mb}MB",
                    "disk_free_limit.absolute = 50MB",
                ]
            )
            + "\n"
        )

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        if node is not None:
            env.update(
                {
                    "RABBITMQ_NODENAME": node.name,
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_NODE_PORT": str(node.amqp_port),
                    "RABBITMQ_DIST_PORT": str(node.dist_port),
                    "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(node.base / "log"),
                    "RABBITMQ_PID_FILE": str(node.base / "pid"),
                    "RABBITMQ_PLUGINS_EXPAND_DIR": str(node.base / "plugins-expand"),
                    "RABBITMQ_SERVER_ERL_ARGS": "+S 1:1 +sbwt none +A 4",
                    "RABBITMQ_CTL_DIST_PORT_MIN": str(self.epmd_port + 1),
                }
            )
        return env

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 120.0) -> None:
        self._epmd = subprocess.Popen(
            ["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.host, self.epmd_port, 10.0, "epmd")
        deadline = time.monotonic() + timeout
        # One node at a time: nodes booting together race to join the MQTT plugin's client-id Raft
        # cluster ("cluster_change_not_permitted"), and the cluster then stopped registering new MQTT
        # clients after ~140 connections.
        for node in self.nodes:
            self._spawn(node)
            self._wait_booted(node, deadline)
        self._wait_clustered(deadline)

    def _spawn(self, node: RabbitNode) -> None:
        node.base.joinpath("log").mkdir(parents=True, exist_ok=True)
        out = open(node.base / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the node
        node.proc = subprocess.Popen(
            [str(_sbin() / "rabbitmq-server")],
            env=self._env(node),
            cwd=node.base,  # crash dumps (MnesiaCore.*, erl_crash.dump) land here, not in the caller's folder
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def _wait_booted(self, node: RabbitNode, deadline: float) -> None:
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq node {node.name} exited: {self.node_log(node)[-3000:]}")
            if _port_open(self.host, node.mqtt_port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq node {node.name} not up in time: {self.node_log(node)[-3000:]}")
            time.sleep(0.2)

    def _wait_clustered(self, deadline: float) -> None:
        want = len(self.nodes)
        while True:
            out = self.ctl("cluster_status", "--formatter", "json", check=False)
            if out.count("@localhost") and _running_count(out) >= want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq cluster did not form: {out[-2000:]}")
            time.sleep(0.5)

    def start_node(self, index: int, timeout: float = 90.0) -> None:
        node = self.nodes[index]
        if node.running:
            return
        self._spawn(node)
        deadline = time.monotonic() + timeout
        self._wait_booted(node, deadline)
        self._wait_clustered(deadline)

    def kill(self, index: int) -> None:
        """SIGKILL a node's whole process group (beam and its port programs): a crash, not a shutdown."""
        node = self.nodes[index]
        if node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()
        node.proc = None
        # Closed listening sockets free at once; wait until the MQTT port no longer answers.
        end = time.monotonic() + 10
        while _port_open(self.host, node.mqtt_port) and time.monotonic() < end:
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGTERM)
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait()
            node.proc = None
        if self._epmd is not None:
            self._epmd.terminate()
            try:
                self._epmd.wait(5)
            except subprocess.TimeoutExpired:
                self._epmd.kill()
                self._epmd.wait()
            self._epmd = None

    # ------------------------------------------------------------------ administration

    def ctl(self, *args: str, check: bool = True, node: int | None = None) -> str:
        """Run `rabbitmqctl` against a running node (the first one up unless `node` is given)."""
        target = self.nodes[node] if node is not None else next((n for n in self.nodes if n.running), self.nodes[0])
        proc = subprocess.run(
            [str(_sbin() / "rabbitmqctl"), "-n", target.name, *args],
            env=self._env(target),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stdout} {proc.stderr}")
        return proc.stdout + proc.stderr

    def add_user(self, user: str, password: str, *, tags: str = "") -> None:
        self.ctl("add_user", user, password)
        if tags:
            self.ctl("set_user_tags", user, tags)
        self.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")

    def set_topic_permissions(self, user: str, write: str, read: str) -> None:
        """Topic ACLs on the MQTT exchange (topics are matched with `/` turned into `.`)."""
        self.ctl("set_topic_permissions", "-p", "/", user, "amq.topic", write, read)

    def import_users(self, users: list[tuple[str, str, str, str]]) -> None:
        """Many users at once, `(name, password, write_regex, read_regex)`, in one `import_definitions`
        (a `rabbitmqctl` run costs ~1 s of Erlang start-up; 200 gates one by one would take minutes)."""
        import json

        definitions = {
            "users": [{"name": u, "password": p, "tags": ""} for u, p, _, _ in users],
            "permissions": [
                {"user": u, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} for u, _, _, _ in users
            ],
            "topic_permissions": [
                {"user": u, "vhost": "/", "exchange": "amq.topic", "write": w, "read": r} for u, _, w, r in users
            ],
        }
        path = self.workdir / f"definitions-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(definitions))
        self.ctl("import_definitions", str(path))

    def ctl_script(self) -> Path:
        """A `rabbitmqctl` stand-in bound to this cluster (for scripts that take $RABBITMQCTL)."""
        path = self.workdir / "rabbitmqctl"
        target = self.nodes[0]
        env = " ".join(f"{k}='{v}'" for k, v in self._env(target).items())
        path.write_text(f'#!/bin/sh\nexec env {env} {_sbin() / "rabbitmqctl"} -n {target.name} "$@"\n')
        path.chmod(0o755)
        return path

    def node_log(self, node: RabbitNode) -> str:
        parts = []
        for path in [node.base / "stdout.log", *sorted((node.base / "log").glob("*.log"))]:
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]


def _running_count(status_json: str) -> int:
    import json

    try:
        data = json.loads(status_json[status_json.find("{") :])
    except ValueError:
        return 0
    return len(data.get("running_nodes", []))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout} s")
        time.sleep(0.05)
