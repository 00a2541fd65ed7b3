"""Every adjustment this provider makes to pynetdicom's behaviour, in one place.

Written for pynetdicom 3.0.x (see :data:`SUPPORTED_PYNETDICOM`). The adjustments are subclasses, not
monkeypatches of pynetdicom's module state: only application entities built by :func:`make_ae` are
affected, so other pynetdicom users in the same process are untouched.

Adjustments:

* **TCP_NODELAY** on every socket we open (requestor side) and every connection our servers accept.
  pynetdicom never sets it, and without it each DIMSE message that is written in more than one
  ``send()`` waits for the peer's delayed ACK (~40 ms on Linux): 1,000 small C-STOREs took 45 s instead of
  3 s here.
* **Parking the reactor before a request** (:func:`park_reactor`). pynetdicom's association thread
  (the "reactor") may have passed its pause checkpoint just before ``send_c_find()`` clears it, see
  ``_is_paused`` still True and then take the first response off the DIMSE queue itself, logging
  "Received unexpected C-FIND service message" and dropping it: a C-FIND then silently loses a match
  (or a C-ECHO/C-STORE waits for a response that never comes). Measured here under CPU load: 7 to 9 of
  2,000 C-FINDs on one association lost a match. Call :func:`park_reactor` right before every
  ``send_*`` on a requestor association.
* **No identifiers in pynetdicom's logs** (:func:`hide_identifiers_from_logs`, applied on import of
  this module). pynetdicom logs every C-FIND/C-GET/C-MOVE request and response identifier at INFO
  (PatientName, PatientID, birth date...), and Airflow task logs record INFO. pynetdicom offers only
  its global ``_config.LOG_REQUEST_IDENTIFIERS`` / ``LOG_RESPONSE_IDENTIFIERS`` switches for this, so
  this is the one global setting made here (it also saves formatting every identifier: ~0.2 s per 600
  matches).

:func:`check_pynetdicom` verifies that the pynetdicom internals these subclasses override still exist
with the expected shape; the test-suite calls it so that an upgrade of pynetdicom fails loudly instead
of silently losing an adjustment.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from typing import Any

import pynetdicom
from pynetdicom import ae as _ae
from pynetdicom import transport as _transport

#: pynetdicom versions (major.minor) these adjustments were written for and tested with.
SUPPORTED_PYNETDICOM = ("3.0",)


def set_nodelay(sock: Any) -> None:
    """Set TCP_NODELAY on ``sock`` if it is a TCP socket (TLS-wrapped sockets included).

    :param sock: a socket object.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not TCP (e.g. a socketpair in a test) or already closed
        pass


class _RecordingSocket(socket.socket):
    """A TCP socket that remembers why ``connect()`` failed.

    pynetdicom's ``AssociationSocket.connect`` logs and swallows the ``OSError``; we keep it so that the
    caller can report *why* a node was unreachable (refused, timed out, no route...).
    """

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


class NoDelayAssociationSocket(_transport.AssociationSocket):
    """Requestor-side socket: TCP_NODELAY set, connection failure reason recorded."""

    connect_error: OSError | None = None

    def _create_socket(self, address: _transport.AddressInformation) -> socket.socket:
        plain = super()._create_socket(address)
        timeout = plain.gettimeout()
        sock = _RecordingSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(timeout)
        sock.owner = self
        set_nodelay(sock)
        return sock


class NoDelayAssociationServer(_transport.AssociationServer):
    """Blocking association server whose accepted connections have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client_socket, address = super().get_request()
        set_nodelay(client_socket)
        return client_socket, address


class NoDelayThreadedAssociationServer(_transport.ThreadedAssociationServer):
    """Threaded association server whose accepted connections have TCP_NODELAY set."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client_socket, address = super().get_request()
        set_nodelay(client_socket)
        return client_socket, address


_SERVER_SUBSTITUTES: dict[type, type] = {
    _transport.AssociationServer: NoDelayAssociationServer,
    _transport.ThreadedAssociationServer: NoDelayThreadedAssociationServer,
}


class TunedAE(_ae.ApplicationEntity):
    """An ApplicationEntity with this module's adjustments applied to its sockets and servers."""

    def _create_socket(
        self,
        assoc: Any,
        address: _transport.AddressInformation,
        tls_args: Any,
    ) -> _transport.AssociationSocket:
        sock = NoDelayAssociationSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock

    def make_server(self, address: Any, *args: Any, server_class: Any = None, **kwargs: Any) -> Any:
        server_class = _SERVER_SUBSTITUTES.get(server_class or _transport.AssociationServer, server_class)
        return super().make_server(address, *args, server_class=server_class, **kwargs)


def park_reactor(assoc: Any, timeout: float = 5.0) -> bool:
    """Hold ``assoc``'s reactor thread in its pause checkpoint so it cannot steal the next response.

    Clears the checkpoint (as pynetdicom's ``send_*`` methods do) and then waits until the reactor
    thread is really blocked in ``Event.wait()`` (it is registered as a waiter of the event's
    condition), which pynetdicom's own ``_is_paused`` flag cannot tell. The following ``send_*`` call
    sets the checkpoint again when its exchange is over.

    :param assoc: an established requestor association.
    :param timeout: seconds to wait for the reactor (it checks every millisecond).
    :return: True when the reactor is parked; False if it did not park in time (dead association).
    """
    event = assoc._reactor_checkpoint
    event.clear()
    waiters = getattr(getattr(event, "_cond", None), "_waiters", None)
    if waiters is None:  # another Python implementation: fall back to pynetdicom's own check
        return bool(getattr(assoc, "_is_paused", False))
    deadline = time.monotonic() + timeout
    while not waiters:
        if not assoc.is_alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def hide_identifiers_from_logs() -> None:
    """Stop pynetdicom from logging request/response identifiers (PHI) at INFO; see the module docstring."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


hide_identifiers_from_logs()


def make_ae(ae_title: str) -> TunedAE:
    """A new tuned application entity.

    :param ae_title: our AE title.
    """
    return TunedAE(ae_title=ae_title)


def check_pynetdicom() -> list[str]:
    """Return the problems found with the installed pynetdicom (empty when all adjustments apply).

    Checks the version and the signatures of every pynetdicom internal overridden here.
    """
    problems: list[str] = []
    version = ".".join(pynetdicom.__version__.split(".")[:2])
    if version not in SUPPORTED_PYNETDICOM:
        problems.append(
            f"pynetdicom {pynetdicom.__version__} is not one of the tested versions {SUPPORTED_PYNETDICOM}"
        )
    expected = {
        (_transport.AssociationSocket, "_create_socket"): ["self", "address"],
        (_transport.AssociationSocket, "connect"): ["self", "primitive"],
        (_transport.AssociationServer, "get_request"): ["self"],
        (_ae.ApplicationEntity, "_create_socket"): ["self", "assoc", "address", "tls_args"],
    }
    for (cls, name), params in expected.items():
        func = getattr(cls, name, None)
        if func is None:
            problems.append(f"{cls.__name__}.{name} no longer exists")
            continue
        found = list(inspect.signature(func).parameters)
        if found != params:
            problems.append(f"{cls.__name__}.{name} signature changed: {found} (expected {params})")
    make_server = inspect.signature(_ae.ApplicationEntity.make_server).parameters
    if "server_class" not in make_server:
        problems.append("ApplicationEntity.make_server no longer takes server_class")
    from pynetdicom import association as _association

    reactor = inspect.getsource(_association.Association._run_reactor)
    if "self._reactor_checkpoint.wait()" not in reactor:
        problems.append("Association._run_reactor no longer waits on _reactor_checkpoint (park_reactor)")
    probe = threading.Event()
    if not hasattr(getattr(probe, "_cond", None), "_waiters"):
        problems.append("threading.Event has no _cond._waiters: park_reactor cannot see the reactor wait")
    source = inspect.getsource(_transport.AssociationSocket.connect)
    if "self._is_connected = True" not in source:
        problems.append("AssociationSocket.connect no longer sets _is_connected")
    return problems
