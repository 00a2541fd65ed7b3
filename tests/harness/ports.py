"""Free loopback TCP ports for test peers, never the same one twice per process."""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["free_port", "wait_for_port"]

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` and was not returned before in this process.

    The port is found by binding to port 0 and reading what the kernel chose. Ports already
    handed out are remembered, so two fixtures never share one even after the first peer stopped
    (dcmtk's storescp does not set SO_REUSEADDR, and a port in TIME_WAIT may not be rebindable).
    """
    with _lock:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port that was not handed out before")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> bool:
    """Poll until a TCP connection to ``host:port`` succeeds; return False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
