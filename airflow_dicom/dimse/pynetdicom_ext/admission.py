"""Admission: the receiver's accept loop only accepts; each connection is screened in its own thread.

pynetdicom's ``AssociationServer.get_request`` does the TLS handshake in the accept loop, so one client that
connects and says nothing held every new association for as long as it stayed (more than 8 s measured), and
every silent plain connection became an association thread counted against ``maximum_associations`` until
its ARTIM timer fired. Here the accept loop does only cheap checks (allowed networks, connections per
peer address, connections not yet associated) and a per-connection thread does the TLS handshake and waits
for the first PDU, both before one deadline (:attr:`AdmissionLimits.idle_timeout`). Only a connection that
has sent something becomes a pynetdicom association. Every refusal is logged with the peer address and the
reason (no PHI: nothing of the association has been read) and counted in :attr:`AdmittingServer.refused`.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_dicom.dimse.tls import explain_server_failure

log = logging.getLogger("airflow_dicom.dimse.receiver.admission")

#: PDU types a DICOM upper layer connection may start with (PS3.8 9.3.1): A-ASSOCIATE-RQ, really
_TLS_RECORD_HANDSHAKE = 0x16


@dataclass(frozen=True)
class AdmissionLimits:
    """Limits on connections the receiver accepts, before and besides pynetdicom's association limit.

    :param idle_timeout: seconds a new connection may take for its TLS handshake and first PDU together.
    :param max_pending: connections at most that are open but not yet an association (others are closed).
    :param max_per_peer: connections at most from one peer address (None: no limit).
    :param allowed_networks: if given, only peers in these networks (CIDR, e.g. ``10.1.0.0/16``) connect.
    """

    idle_timeout: float = 10.0
    max_pending: int = 64
    max_per_peer: int | None = None
    allowed_networks: tuple[Any, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be greater than zero")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if self.max_per_peer is not None and self.max_per_peer < 1:
            raise ValueError("max_per_peer must be at least 1")
        object.__setattr__(self, "allowed_networks", parse_networks(self.allowed_networks))


def parse_networks(values: Iterable[Any]) -> tuple[Any, ...]:
    """``ipaddress`` networks from CIDR strings (a bare address is a /32 or /128).

    :param values: CIDR strings or network objects.
    :raises ValueError: a value is not a network (the message names it).
    """
    networks = []
    for value in values or ():
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network (CIDR like 10.0.0.0/8 or an address)") from None
    return tuple(networks)


class _Refused(Exception):
    """A connection refused while screened; ``sock`` is the socket to close (the TLS one that replaced it).

    The caller counts the refusal before it closes the socket: a peer that sees the close sees the count.
    """

    def __init__(self, reason: str, detail: str, sock: socket.socket | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sock = sock


class AdmittingServer:
    """Mixin for pynetdicom's threaded association server (see the module docstring).

    Replaces ``get_request`` (accept only; no TLS), ``verify_request`` (networks and counts),
    ``process_request_thread`` (handshake and first PDU before the deadline, then pynetdicom's handler) and
    ``server_close`` (wakes connections still being screened). The limits come from the application
    entity's ``admission`` attribute (default :class:`AdmissionLimits`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._admission_lock = threading.Lock()
        self._per_peer: Counter[str] = Counter()
        self._screening: set[socket.socket] = set()
        #: refusals by reason (``network``, ``per_peer``, ``pending``, ``idle``, ``tls``, ``closed``, ...)
        self.refused: Counter[str] = Counter()
        super().__init__(*args, **kwargs)
        ae = self.ae  # type: ignore[attr-defined]
        self.limits: AdmissionLimits = getattr(ae, "admission", None) or AdmissionLimits()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection: no TLS and no reads here (the accept loop must never wait on a client)."""
        client, address = self.socket.accept()  # type: ignore[attr-defined]
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit or refuse a connection by peer network and counts (cheap; runs in the accept loop).

        :param request: the accepted socket.
        :param client_address: the peer's address.
        """
        peer = str(client_address[0])
        limits = self.limits
        reason = detail = ""
        if limits.allowed_networks and not _in_networks(peer, limits.allowed_networks):
            reason, detail = "network", "peer address outside the allowed networks"
        with self._admission_lock:
            if not reason and limits.max_per_peer and self._per_peer[peer] >= limits.max_per_peer:
                reason, detail = "per_peer", f"{limits.max_per_peer} connections from this address already"
            if not reason and len(self._screening) >= limits.max_pending:
                reason, detail = "pending", f"{limits.max_pending} connections already wait to associate"
            if not reason:
                self._per_peer[peer] += 1
                self._screening.add(request)
                return True
            self.refused[reason] += 1
        log.warning("refused connection from %s: %s", peer, detail)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand a connection whose first PDU is already here straight to pynetdicom; screen the others.

        A plain (non-TLS) connection with data waiting needs no screening thread: nothing is left to wait
        for, so the accept loop checks it (one ``select`` with no timeout and one peeked byte) and hands it
        over at once. A PACS sending a study per association (C-MOVE) nearly always sends its request
        before we accept; each thread started costs a GIL hand-off, up to 5 ms on a busy machine.

        :param request: the accepted socket.
        :param client_address: the peer's address.
        """
        if self.ssl_context is None and _request_waiting(request):  # type: ignore[attr-defined]
            with self._admission_lock:
                self._screening.discard(request)
            request.setblocking(True)  # as after screening
            self._hand_over(request, client_address)
            return
        super().process_request(request, client_address)  # type: ignore[misc]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Screen the connection (TLS handshake, first PDU) before the deadline, then hand it to pynetdicom.

        :param request: the accepted socket.
        :param client_address: the peer's address.
        """
        peer = str(client_address[0])
        try:
            ready = self._screen(request)
        except _Refused as refused:
            with self._admission_lock:
                self._screening.discard(request)
                self.refused[refused.reason] += 1
            self.release_peer(peer)
            _close(refused.sock if refused.sock is not None else request)
            level = logging.DEBUG if refused.reason == "closed" else logging.WARNING
            log.log(level, "dropped connection from %s: %s", peer, refused.detail)
            return
        with self._admission_lock:
            self._screening.discard(request)
        self._hand_over(ready, client_address)

    def _hand_over(self, sock: Any, client_address: Any) -> None:
        """Give a screened connection to pynetdicom (its request handler starts the association)."""
        try:
            self.finish_request(sock, client_address)  # type: ignore[attr-defined]
        except Exception:
            self.handle_error(sock, client_address)  # type: ignore[attr-defined]
            self.release_peer(str(client_address[0]))
            _close(sock)

    def release_peer(self, peer: str) -> None:
        """Forget one connection from ``peer`` (its association ended or it was dropped).

        :param peer: the peer's address.
        """
        with self._admission_lock:
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]

    def server_close(self) -> None:
        """Close the listening socket and wake connections still being screened (they are dropped)."""
        with self._admission_lock:
            waiting = list(self._screening)
        for sock in waiting:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().server_close()  # type: ignore[misc]

    def _screen(self, sock: socket.socket) -> socket.socket:
        """The TLS handshake (if any) and the wait for the first PDU, together before the idle deadline."""
        limits = self.limits
        deadline = time.monotonic() + limits.idle_timeout
        context: ssl.SSLContext | None = self.ssl_context  # type: ignore[attr-defined]
        if context is not None:
            sock = _handshake(context, sock, deadline, limits.idle_timeout)
            if sock.pending():
                sock.setblocking(True)
                return sock
        remaining = deadline - time.monotonic()
        try:
            readable, _, _ = select.select([sock], [], [], max(0.0, remaining))
        except (OSError, ValueError):
            raise _Refused("closed", "connection closed while waiting", sock) from None
        if not readable:
            raise _Refused("idle", f"no association request within {limits.idle_timeout:g} s", sock)
        if context is None:
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            if not first:
                raise _Refused("closed", "closed without an association request", sock)
            if first[0] == _TLS_RECORD_HANDSHAKE:
                raise _Refused("tls_on_plain", "a TLS client on this plain (non-TLS) port", sock)
        sock.setblocking(True)
        return sock


def _handshake(context: ssl.SSLContext, sock: socket.socket, deadline: float, idle: float) -> ssl.SSLSocket:
    """Server-side TLS handshake, non-blocking, finished before ``deadline`` or refused."""
    sock.setblocking(False)
    try:
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:
        raise _Refused("tls", explain_server_failure(exc)) from None
    while True:
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            wait = ([tls], [])
        except ssl.SSLWantWriteError:
            wait = ([], [tls])
        except (OSError, ValueError) as exc:
            raise _Refused("tls", explain_server_failure(exc), tls) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Refused("idle", f"no TLS handshake within {idle:g} s", tls)
        try:
            ready = select.select(wait[0], wait[1], [], remaining)
        except (OSError, ValueError):
            raise _Refused("closed", "connection closed during the TLS handshake", tls) from None
        if not any(ready):
            raise _Refused("idle", f"no TLS handshake within {idle:g} s", tls)


def _request_waiting(sock: socket.socket) -> bool:
    """True when a plain connection's first bytes are already here and are not a TLS hello."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        first = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, ValueError):
        return False
    return bool(first) and first[0] != _TLS_RECORD_HANDSHAKE


def _in_networks(peer: str, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _close(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass
