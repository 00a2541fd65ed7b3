"""A TLS front for a plain-HTTP server (Orthanc 1.10.1's own HTTPS crashes on Debian 12's OpenSSL 3).

:class:`TlsProxy` accepts TLS connections on a free loopback port with a self-signed certificate for
127.0.0.1 (made with the ``openssl`` command) and relays the bytes to the target port, so clients speak
real HTTPS to a real server behind it.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType

from .ports import free_port

__all__ = ["TlsProxy", "self_signed_certificate"]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """``(certificate, key)`` PEM files of a self-signed certificate for 127.0.0.1 (valid 2 days).

    :param folder: where to write them.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TlsProxy:
    """Relay TLS connections on ``port`` to ``127.0.0.1:target_port`` (use as a context manager).

    :param target_port: the plain server's port.
    :param cert: the certificate PEM file.
    :param key: its private key PEM file.
    """

    host = "127.0.0.1"

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.port = free_port()
        self._listener = socket.create_server((self.host, self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-proxy", daemon=True)

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            secure = self.context.wrap_socket(client, server_side=True)
            secure.settimeout(None)
            upstream = socket.create_connection((self.host, self.target_port))
        except (OSError, ssl.SSLError):
            client.close()  # e.g. the client refused our certificate
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pipe, args=(upstream, secure), daemon=True).start()
        _pipe(secure, upstream)

    def start(self) -> TlsProxy:
        """Start accepting."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the listening socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
