"""The PACS's own address: a TCP forwarder to Orthanc that can refuse associations for a while.

While refusing, every new connection is answered with an A-ASSOCIATE-RJ "rejected-transient, local limit
exceeded" (PS3.8 9.3.4), as a PACS out of resources does; associations already open go on. The same forwarder
with a ``delay`` is a slow link (a WAN between a PACS and a receiver): every chunk of bytes, either way, is
held that long before it is passed on.

Run as its own process (``python -m distributed.gate HOST PORT TARGET_HOST TARGET_PORT``): SIGUSR1 starts
refusing, SIGUSR2 stops refusing, SIGTERM ends it.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time

from harness.ports import free_port

#: A-ASSOCIATE-RJ: PDU type 3, length 4, result 2 (transient), source 3 (presentation), reason 2 (limit)
ASSOCIATE_RJ_BUSY = bytes([0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2])


class PacsGate:
    """Listen on ``host`` (a free port), forward each connection to ``target``.

    :param host: the address the PACS is known by.
    :param target: the peer's ``(host, port)`` (Orthanc, or a receiver).
    :param port: the port to listen on (default: a free one).
    :param delay: seconds each chunk of bytes is held before it is passed on (0: none).
    """

    def __init__(
        self, host: str, target: tuple[str, int], port: int | None = None, delay: float = 0.0
    ) -> None:
        self.host = host
        self.delay = delay
        self.port = port or free_port(host)
        self.target = target
        self.refusing = threading.Event()
        self.refused = 0
        self._server = socket.create_server((host, self.port), backlog=64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="pacs-gate", daemon=True)

    def start(self) -> PacsGate:
        """Start accepting."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refusing.is_set():
                self.refused += 1
                try:
                    client.recv(65536)  # the A-ASSOCIATE-RQ
                    client.sendall(ASSOCIATE_RJ_BUSY)
                finally:
                    client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):  # as every DICOM peer here: no 40 ms delayed-ACK stalls
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst, self.delay), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket, delay: float = 0.0) -> None:
    """Copy ``src`` to ``dst`` until either side closes, holding each chunk ``delay`` seconds."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if delay:
                time.sleep(delay)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(argv: list[str]) -> None:
    """Forward ``HOST PORT`` to ``TARGET_HOST TARGET_PORT`` until SIGTERM; SIGUSR1/SIGUSR2 refuse/accept.

    :param argv: the four arguments.
    """
    host, port, target_host, target_port = argv
    gate = PacsGate(host, (target_host, int(target_port)), int(port)).start()
    signal.signal(signal.SIGUSR1, lambda *_: gate.refusing.set())
    signal.signal(signal.SIGUSR2, lambda *_: gate.refusing.clear())
    signal.signal(signal.SIGTERM, lambda *_: gate.stop())
    gate._thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
