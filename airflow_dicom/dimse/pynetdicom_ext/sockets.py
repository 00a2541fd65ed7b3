"""Sockets: TCP_NODELAY on every connection, the reason a connection failed, whole-PDU writes.

pynetdicom never sets TCP_NODELAY, and without it each DIMSE message written in more than one ``send()``
waits for the peer's delayed ACK (~40 ms on Linux): 1,000 small C-STOREs took 45 s instead of 3 s here.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from pynetdicom import evt as _evt
from pynetdicom import transport as _transport
from pynetdicom.ae import ApplicationEntity

from airflow_dicom.dimse.errors import LostResponseError


def set_nodelay(sock: Any) -> None:
    """Set TCP_NODELAY on ``sock`` if it is a TCP socket (TLS-wrapped sockets included).

    :param sock: a socket object (anything else is ignored).
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not TCP (e.g. a socketpair in a test), closed, or None
        pass


class _RecordingSocket(socket.socket):
    """A TCP socket that tells its owner why ``connect()`` failed."""

    __slots__ = ("owner",)

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            # recorded before pynetdicom reports the failure to the waiting thread: no race
            owner = getattr(self, "owner", None)
            if owner is not None:
                owner.connect_error = exc
            raise


class RequestorSocket(_transport.AssociationSocket):
    """The requestor's socket: TCP_NODELAY, the connect failure's reason, and a write lock.

    Replaces the socket pynetdicom's ``ApplicationEntity._create_socket`` makes. Differences:

    * TCP_NODELAY is set before connecting;
    * ``AssociationSocket.connect`` logs and swallows the ``OSError`` of a failed connection; it is kept in
      :attr:`connect_error` so the caller can say *why* a node was unreachable (refused, timed out...);
    * :meth:`send` holds :attr:`write_lock`, so a second thread may write whole PDUs to the same socket
      under the same lock (the raw C-STORE path of :mod:`.requestor`).
    """

    #: the ``OSError`` of a failed ``connect()``, if any
    connect_error: OSError | None = None
    #: the first ``OSError`` of a read (e.g. the peer reset the connection), if any
    recv_error: OSError | None = None
    #: True once the TCP connection is up and the TLS handshake has begun
    handshaking = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_lock = threading.Lock()

    def send_whole(self, data: bytes) -> None:
        """Write whole PDUs from the calling thread (under :attr:`write_lock`, as :meth:`send` does).

        :param data: the encoded PDUs.
        :raises LostResponseError: the connection failed (the DUL's state machine is told, and aborts).
        """
        with self.write_lock:
            try:
                self.socket.sendall(data)  # type: ignore[union-attr]
            except (OSError, AttributeError) as exc:
                self.event_queue.put("Evt17")  # transport closed
                raise LostResponseError(f"the connection failed while sending: {exc}") from exc

    def _create_socket(self, address: _transport.AddressInformation) -> socket.socket:
        plain = super()._create_socket(address)
        timeout = plain.gettimeout()
        sock = _RecordingSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(timeout)
        sock.owner = self
        set_nodelay(sock)
        return sock

    def connect(self, primitive: Any) -> None:
        """Connect over TCP, then (with :attr:`tls_args`) do the TLS handshake; record why either failed.

        pynetdicom's ``AssociationSocket.connect`` wraps the socket before connecting, so a TLS failure
        reaches it as an ``OSError`` it only logs (with a traceback). Here the TCP connection is made
        first (bounded by the connection timeout), then the handshake runs under the same timeout, and a
        failure of either is kept in :attr:`connect_error`; the DUL sees the same events as pynetdicom's.

        :param primitive: pynetdicom's ``T_CONNECT`` primitive.
        """
        if self.socket is None:
            raise ValueError("A socket must be created before calling AssociationSocket.connect()")
        try:
            self.socket.settimeout(self.assoc.connection_timeout)
            self.socket.connect(primitive.address_info.as_tuple)
            if self.tls_args:
                context, server_hostname = self.tls_args
                self.handshaking = True
                self.socket = context.wrap_socket(
                    self.socket, server_side=False, server_hostname=server_hostname
                )
            self.socket.settimeout(None)
            conn_info = self.socket.getsockname()
            self.assoc.requestor.address_info = _transport.AddressInformation.from_tuple(conn_info)
            self._is_connected = True
            _evt.trigger(self.assoc, _evt.EVT_CONN_OPEN, {"address": primitive.address_info.as_tuple})
            primitive.result = "Evt2"
            self.provider_queue.put(primitive)
        except OSError as exc:
            if self.connect_error is None:
                self.connect_error = exc
            if self.socket:
                self._shutdown_socket()
                self.socket = None
            primitive.result = "Evt17"
            self.provider_queue.put(primitive)
        finally:
            self._ready.set()

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom's ``recv``; a TLS failure (e.g. the peer's alert refusing our certificate) is recorded.

        With TLS 1.3 the server judges our certificate after our side of the handshake is done: its
        refusal arrives as an alert on the first read, before the association is accepted.

        :param nr_bytes: how many bytes to read.
        """
        try:
            return super().recv(nr_bytes)
        except OSError as exc:
            if self.recv_error is None:
                self.recv_error = exc
            if self.connect_error is None and self.tls_args:
                self.connect_error = exc
            raise

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's ``AssociationSocket.send`` under :attr:`write_lock`.

        :param bytestream: an encoded PDU.
        """
        with self.write_lock:
            super().send(bytestream)


def tls_handshake_began(assoc: Any) -> bool:
    """True if the TCP connection of a requestor association was made and its TLS handshake began.

    :param assoc: a requestor association.
    """
    sock = getattr(assoc.dul, "socket", None)
    return isinstance(sock, RequestorSocket) and sock.handshaking


def recv_error(assoc: Any) -> OSError | None:
    """The first read error of a requestor association's socket (None if unknown or none).

    :param assoc: a requestor association.
    """
    sock = getattr(assoc.dul, "socket", None)
    return sock.recv_error if isinstance(sock, RequestorSocket) else None


def connect_error(assoc: Any) -> OSError | None:
    """Why the TCP connection of a requestor association failed (None if unknown or it did not fail).

    :param assoc: a requestor association.
    """
    sock = getattr(assoc.dul, "socket", None)
    return sock.connect_error if isinstance(sock, RequestorSocket) else None


class _NoDelayAccept:
    """Mixin for pynetdicom's association servers: accepted connections get TCP_NODELAY."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection (pynetdicom's ``get_request``) and set TCP_NODELAY on it."""
        client_socket, address = super().get_request()  # type: ignore[misc]
        set_nodelay(client_socket)
        return client_socket, address


class NoDelayServer(_NoDelayAccept, _transport.AssociationServer):
    """pynetdicom's blocking association server with TCP_NODELAY on accepted connections."""


class ThreadedNoDelayServer(_NoDelayAccept, _transport.ThreadedAssociationServer):
    """pynetdicom's threaded association server with TCP_NODELAY on accepted connections."""


class NoDelayAE(ApplicationEntity):
    """pynetdicom's ApplicationEntity with TCP_NODELAY (and connect-failure reasons) on its sockets.

    Replaces ``ApplicationEntity._create_socket`` (a :class:`~.sockets.RequestorSocket` instead of
    pynetdicom's ``AssociationSocket``) and maps the server classes ``make_server`` builds to their
    TCP_NODELAY subclasses; reactors and providers stay pynetdicom's.
    """

    #: pynetdicom's server class -> ours (``make_server``'s ``server_class`` extension point)
    server_classes: dict[type, type] = {
        _transport.AssociationServer: NoDelayServer,
        _transport.ThreadedAssociationServer: ThreadedNoDelayServer,
    }

    def _create_socket(
        self, assoc: Any, address: _transport.AddressInformation, tls_args: Any
    ) -> RequestorSocket:
        sock = RequestorSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock

    def make_server(self, address: Any, *args: Any, server_class: Any = None, **kwargs: Any) -> Any:
        """pynetdicom's ``make_server`` building :attr:`server_classes` instead of pynetdicom's servers.

        :param address: ``(host, port)`` to listen on.
        :param args: pynetdicom's positional parameters.
        :param server_class: pynetdicom's parameter (mapped through :attr:`server_classes`).
        :param kwargs: pynetdicom's keyword parameters.
        """
        stock = server_class or _transport.AssociationServer
        return super().make_server(
            address, *args, server_class=self.server_classes.get(stock, stock), **kwargs
        )
