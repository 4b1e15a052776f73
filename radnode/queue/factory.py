"""Choose the broker from settings.

Why: a single-machine node should run with no set-up (embedded queue), and a
deployment with several worker machines points every process at one
RabbitMQ by URL — the rest of radnode only sees the ``Broker`` protocol.
"""

from __future__ import annotations

from typing import Any

import structlog

from radnode.queue.base import Broker

log = structlog.get_logger(__name__)

#: Keyword arguments the embedded broker understands; the others
#: (prefetch, heartbeat, connect_timeout, namespace, ...) only mean something
#: for RabbitMQ.
_EMBEDDED_KW = {"max_attempts", "retry_delays"}


def make_broker(url: str | None, **kw: Any) -> Broker:
    """RabbitBroker for an ``amqp://``/``amqps://`` URL, else EmbeddedBroker.

    An empty URL (or ``embedded:``/``memory:``) selects the in-process
    broker; RabbitMQ-only options are then ignored (logged). Any other
    scheme is a configuration error.
    """
    if url and url.split(":", 1)[0].lower() in ("amqp", "amqps"):
        from radnode.queue.rabbitmq import RabbitBroker

        return RabbitBroker(url, **kw)
    if url and url.split(":", 1)[0].lower() not in ("embedded", "memory"):
        raise ValueError(f"unsupported broker URL {url!r} (expected amqp://, amqps:// or none)")
    from radnode.queue.embedded import EmbeddedBroker

    ignored = sorted(set(kw) - _EMBEDDED_KW)
    if ignored:
        log.debug("embedded broker ignores options", options=ignored)
    return EmbeddedBroker(**{k: v for k, v in kw.items() if k in _EMBEDDED_KW})
