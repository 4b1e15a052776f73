"""RabbitMQ helpers for tests: a private broker instance, topology clean-up
and a subprocess consumer.

Why: the broker tests must prove behaviour across real failures — a consumer
process killed with SIGKILL, a broker that stops and comes back — which a
mock cannot show. The shared broker on 127.0.0.1:5672 is used for everything
except the restart test, which gets its own node (:class:`RabbitInstance`)
so stopping it never disturbs other tests or a developer's broker.

Every test uses its own topology namespace (``RabbitBroker(namespace=...)``)
so parallel runs on the shared broker never see each other's queues or dead
letters; :func:`delete_namespace` removes it afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port

SHARED_URL = os.environ.get("RADNODE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    """The rabbitmq script to run directly as the current user.

    Debian's /usr/sbin wrappers switch to the ``rabbitmq`` user when run as
    root, which then could not write our tmp folders and would use another
    Erlang cookie than the ``rabbitmqctl`` we run; the scripts under
    /usr/lib/rabbitmq/bin run as whoever calls them.
    """
    candidate = _BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(name)
    return found


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def shared_broker_reachable() -> bool:
    return port_open("127.0.0.1", 5672)


def delete_topology(url: str, queues: list[str], exchanges: list[str]) -> None:
    """Delete the queues and exchanges a test declared (best effort)."""
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:
        return
    try:
        ch = conn.channel()
        for q in queues:
            ch.queue_delete(q)
        for ex in exchanges:
            ch.exchange_delete(ex)
    finally:
        try:
            conn.close()
        except Exception:
            pass


def consumer_count(url: str, queue: str) -> int:
    """Consumers attached to *queue* right now (0 if it does not exist)."""
    import pika
    import pika.exceptions

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        try:
            frame = conn.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        return int(frame.method.consumer_count)
    finally:
        try:
            conn.close()
        except Exception:
            pass


class RabbitError(RuntimeError):
    """A private RabbitMQ node failed to start or stop."""


class RabbitInstance:
    """Context manager running a private RabbitMQ node on a free port.

    The node has its own name, data folder (durable queues and persistent
    messages survive :meth:`restart`), logs, config file and an empty
    enabled-plugins file; it listens on 127.0.0.1 only. Start takes ~5–13 s.
    """

    def __init__(self, workdir: Path | str, *, port: int | None = None, start_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.dist_port = self.port + 20000 if self.port + 20000 < 65536 else free_port()
        self.node = f"radnode-test-{self.port}@localhost"
        self.start_timeout = start_timeout
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.start_seconds: float | None = None

    def _env(self) -> dict[str, str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rabbitmq.conf"
        # The system config pins the listener to 5672; ours must name our port.
        conf.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n")
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        env_file = self.workdir / "rabbitmq-env.conf"
        env_file.write_text("")
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbit.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_CONFIG_FILE=str(conf),
            RABBITMQ_CONF_ENV_FILE=str(env_file),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.workdir / "advanced.config"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def start(self) -> None:
        t0 = time.monotonic()
        env = self._env()
        subprocess.run(
            [_tool("rabbitmq-server"), "-detached"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port):
                self.start_seconds = time.monotonic() - t0
                return
            time.sleep(0.1)
        self.stop()
        raise RabbitError(f"RabbitMQ node {self.node} did not open port {self.port}; logs in {self.workdir / 'log'}")

    def stop(self) -> None:
        """Stop the node and wait until its port is closed."""
        env = self._env()
        pid_file = self.workdir / "rabbit.pid"
        subprocess.run(
            [_tool("rabbitmqctl"), "-n", self.node, "shutdown"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and port_open("127.0.0.1", self.port):
            time.sleep(0.1)
        if port_open("127.0.0.1", self.port) and pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 9)
            except (OSError, ValueError):
                pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "RabbitInstance":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- subprocess consumer ------------------------------------------------------


def _consumer_main(argv: list[str]) -> int:
    """``python -m tests.support.rabbit consume ...``: a consumer process that
    appends each handled message id (and its redelivered flag) to a file.

    Why a real process: the tests must show that a consumer *process* killed
    with SIGKILL mid-job gets its message redelivered, and that two processes
    never both handle one message.
    """
    from radnode.queue.base import HandlerResult
    from radnode.queue.rabbitmq import RabbitBroker

    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--app", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    args = p.parse_args(argv)
    out = Path(args.out)
    stop = threading.Event()
    broker = RabbitBroker(args.url, namespace=args.namespace, retry_delays=(0.2,))

    def handler(d):  # type: ignore[no-untyped-def]
        with out.open("a") as f:
            f.write(f"start {d.message_id} {int(d.redelivered)}\n")
            f.flush()
        if args.sleep:
            time.sleep(args.sleep)
        with out.open("a") as f:
            f.write(f"done {d.message_id} {int(d.redelivered)}\n")
            f.flush()
        return HandlerResult.ack()

    try:
        broker.consume([args.app], handler, stop)
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(_consumer_main(sys.argv[1:]))
