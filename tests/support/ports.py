"""Free TCP ports for test servers.

Why: every test server (Orthanc, storescp, radnode's listener) must bind its
own port so tests can run in parallel (pytest-xdist) and next to a developer's
running services.
"""

from __future__ import annotations

import socket
import threading

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Binds port 0 so the kernel picks an unused ephemeral port, then closes the
    socket. There is an unavoidable race until the caller binds it, but the
    kernel hands out ephemeral ports round-robin, so collisions between xdist
    workers are rare; ports already returned in this process are never
    returned twice.
    """
    with _lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")
