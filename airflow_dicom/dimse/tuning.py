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

import hashlib
import inspect
import io
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from datetime import datetime
from typing import Any

import pynetdicom
from pynetdicom import _config, _handlers
from pynetdicom import ae as _ae
from pynetdicom import association as _association
from pynetdicom import dimse as _pdimse
from pynetdicom import dimse_primitives as _primitives
from pynetdicom import dul as _dul
from pynetdicom import events as _evt
from pynetdicom import pdu as _pdu
from pynetdicom import pdu_primitives as _pdu_primitives
from pynetdicom import service_class as _service_class
from pynetdicom import transport as _transport

from airflow_dicom.dimse.codec import (
    C_STORE_RQ,
    COMMAND_LAST_FRAGMENT,
    NO_DATASET,
    decode_c_store_rsp,
    decode_command_set,
    decode_text,
    encode_c_store_rq,
    encode_c_store_rsp,
    pdata_pdus,
)

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
    problems.extend(check_low_latency_requestor())  # the requestor-side send adjustments (defined below)
    problems.extend(check_receiver_adjustments())  # the acceptor-side receiver adjustments (defined below)
    return problems


# ------------------------------------------------------------------------------------------------------
# Requestor side: low-latency C-STORE sending (issue "send"). Self-contained; used only by associations
# opened with ``open_association(..., low_latency=True)``.
#
# Measured on pynetdicom 3.0.4 (1,000 x 8 KB C-STOREs to dcmtk storescp over loopback): every message
# paid (1) the DUL thread's ~1 ms ``time.sleep`` poll before it noticed the response on the socket,
# (2) up to 1 ms waiting for the association reactor to pause (its loop also sleeps 1 ms), (3) a hop
# through the DUL thread and its state machine for every P-DATA PDU sent, and (4) pydicom encoding the
# command set. The classes below remove (1) by waiting in ``select()`` on the socket and a wake-up
# socketpair, (2) and the lost-response race of pynetdicom#875 by a requestor reactor that never takes
# DIMSE messages off the queue (the thread that sent a request is the only consumer of its response),
# and (3)+(4) with :func:`send_c_store_raw`, which writes hand-encoded command sets and the file's own
# dataset bytes straight to the socket under a lock shared with the DUL thread.
# ------------------------------------------------------------------------------------------------------


#: Longest the low-latency DUL waits in ``select()`` before re-checking its timers and kill flag.
DUL_IDLE_WAIT = 0.02
#: Period of the requestor reactor that only watches for release requests, aborts and timeouts.
REQUESTOR_REACTOR_PERIOD = 0.005


#: longest a waiting loop sleeps before re-checking timers and flags that have no wake-up signal.
IDLE_WAIT = 0.002


class EventDrivenDUL(_dul.DULServiceProvider):
    """A DUL provider that sleeps in ``select()`` on its socket and a wake-up pipe instead of polling.

    :meth:`send_pdu` (called by the association thread to queue a response) writes one byte to the
    wake-up pipe, so the DUL thread sends it at once; incoming data wakes ``select()`` directly.
    """

    #: longest wait in ``select()`` before the loop re-checks its timers and kill flag
    idle_wait = IDLE_WAIT

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        # the pipe exists only while the DUL thread runs; the lock makes sure no thread ever writes to a
        # closed descriptor (its number may already belong to another file or another peer's socket)
        self._wake_lock = threading.Lock()
        self._wake_r: int | None = None
        self._wake_w: int | None = None

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def wake(self) -> None:
        """Interrupt the DUL thread's wait (safe from any thread, never blocks; no-op when not running)."""
        with self._wake_lock:
            if self._wake_w is None:
                return
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # pipe full: a wake-up is pending anyway
                pass

    def _idle_wait(self) -> None:
        """Wait until the socket is readable, a primitive is queued, or ``idle_wait`` has passed."""
        sock = getattr(self.socket, "socket", None)
        wake_r = self._wake_r  # only this (the DUL) thread opens and closes it
        if sock is None or wake_r is None or (_ssl is not None and isinstance(sock, _ssl.SSLSocket)):
            time.sleep(self._run_loop_delay)  # TLS may buffer data select() cannot see
            return
        try:
            readable, _, _ = select.select([sock, wake_r], [], [], self.idle_wait)
        except (OSError, ValueError):  # socket closed under us: let the loop find out
            return
        if wake_r in readable:
            try:
                os.read(wake_r, 4096)
            except OSError:
                pass

    def _open_wake(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._wake_lock:
            self._wake_r, self._wake_w = read_fd, write_fd

    def _close_wake(self) -> None:
        with self._wake_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = None
            for fd in fds:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0's DUL loop with the idle ``time.sleep`` replaced by :meth:`_idle_wait`."""
        self._open_wake()
        try:
            self._run_reactor_loop()
        finally:
            self._close_wake()

    def _run_reactor_loop(self) -> None:
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._idle_wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _dul.LOGGER.error("Exception in DUL.run(), aborting association")
                _dul.LOGGER.exception(exc)
                abort_pdu = _pdu.A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


class LowLatencyDUL(EventDrivenDUL):
    """Requestor-side DUL: the same ``select()``-based loop as the acceptor's, also woken when the
    association is killed, idling longer between timer checks (it serves no peer requests).
    """

    idle_wait = DUL_IDLE_WAIT

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()


class LockedAssociationSocket(NoDelayAssociationSocket):
    """Requestor socket whose writes are serialised by a lock, so two threads may write whole PDUs.

    The DUL thread writes through :meth:`send`; :func:`send_c_store_raw` writes from the sending thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_lock = threading.Lock()

    def send(self, bytestream: bytes) -> None:
        with self.write_lock:
            super().send(bytestream)


def reactor_should_stop(assoc: Any) -> bool:
    """The end-of-association part of pynetdicom 3.0's reactor loop, shared by our two reactors.

    Handles a peer's release request, an abort, a dead DUL and the network timeout; kills the association
    and returns True when the reactor must stop.

    :param assoc: the association whose reactor is running.
    """
    log = _association.LOGGER
    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        log.info("Association Released")
        assoc.is_released = True
        assoc.is_established = False
        _evt.trigger(assoc, _evt.EVT_RELEASED, {})
        assoc.kill()
        return True
    if assoc.acse.is_aborted():
        log_msg = "Association Aborted"
        if assoc.acse.is_aborted("a-p-abort"):
            log_msg += " (A-P-ABORT)"
        log.info(log_msg)
        assoc.dul.receive_pdu(wait=False)
        assoc.is_aborted = True
        assoc.is_established = False
        _evt.trigger(assoc, _evt.EVT_ABORTED, {})
        assoc.kill()
        return True
    if not assoc.dul.is_alive():
        assoc.kill()
        return True
    if assoc.dul.idle_timer_expired():
        log.error("Network timeout reached")
        if assoc.network_timeout_response == "A-RELEASE":
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return True
    return False


class LowLatencyRequestorAssociation(_association.Association):
    """A requestor association whose reactor never takes DIMSE messages off the queue.

    pynetdicom's reactor polls the DIMSE queue every 1 ms and must be "paused" by every ``send_*`` call;
    that pause has a window in which the reactor takes the response meant for the sender (pynetdicom#875:
    the sender then waits until its DIMSE timeout). A requestor has nothing to serve (C-GET sub-operations
    are handled inside ``send_c_get``), so this reactor only watches for release requests, aborts, a dead
    DUL and the network timeout.
    """

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            time.sleep(REQUESTOR_REACTOR_PERIOD)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if reactor_should_stop(self):
                return


class LowLatencyDIMSE(_pdimse.DIMSEServiceProvider):
    """DIMSE provider that decodes single-PDV C-STORE-RSP messages by hand (no pydicom).

    Anything else (fragmented messages, other commands) goes through pynetdicom's own decoding. A fast
    decoded response is put on ``msg_queue`` as a :class:`StoreResponse`.
    """

    def receive_primitive(self, primitive: Any) -> None:
        pdvs = primitive.presentation_data_value_list
        if self.message is None and len(pdvs) == 1:
            context_id, data = pdvs[0]
            if data[:1] == b"\x03":  # command, last fragment
                rsp = decode_c_store_rsp(bytes(data[1:]))
                if rsp is not None:
                    self.msg_queue.put((context_id, rsp))  # type: ignore[arg-type]
                    return
        super().receive_primitive(primitive)


#: pynetdicom's logging handlers decode every command set even when nothing is logged.
_STANDARD_LOG_HANDLERS = (
    ("EVT_DIMSE_RECV", "standard_dimse_recv_handler"),
    ("EVT_DIMSE_SENT", "standard_dimse_sent_handler"),
    ("EVT_PDU_RECV", "standard_pdu_recv_handler"),
    ("EVT_PDU_SENT", "standard_pdu_sent_handler"),
)


def drop_standard_log_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's standard DIMSE/PDU logging handlers unless pynetdicom logs at INFO or below.

    :param assoc: an association (not yet started).
    """
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return
    for event_name, handler_name in _STANDARD_LOG_HANDLERS:
        handler = getattr(_handlers, handler_name, None)
        event = getattr(_evt, event_name, None)
        if handler is not None and event is not None:
            assoc.unbind(event, handler)


class LowLatencyAE(TunedAE):
    """A :class:`TunedAE` whose requestor associations use the low-latency classes above."""

    def _create_socket(
        self,
        assoc: Any,
        address: _transport.AddressInformation,
        tls_args: Any,
    ) -> _transport.AssociationSocket:
        # called by ``ApplicationEntity.associate`` before the association's threads start
        if assoc.is_requestor:
            timeout = assoc.network_timeout
            assoc.__class__ = LowLatencyRequestorAssociation
            assoc.dul = LowLatencyDUL(assoc)
            assoc.dul._idle_timer.timeout = timeout
            assoc.dimse = LowLatencyDIMSE(assoc)
            drop_standard_log_handlers(assoc)
        sock = LockedAssociationSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


def make_low_latency_ae(ae_title: str) -> LowLatencyAE:
    """A new application entity whose requestor associations are tuned for many short DIMSE messages.

    :param ae_title: our AE title.
    """
    return LowLatencyAE(ae_title=ae_title)


class RawSendError(Exception):
    """The socket failed while writing a request (the association is gone)."""


def send_c_store_raw(
    assoc: Any,
    context_id: int,
    msg_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    dataset: bytes | memoryview,
    priority: int = 2,
) -> None:
    """Write one C-STORE-RQ (command set + already encoded data set) to an association's socket.

    ``dataset`` must already be encoded in the transfer syntax of presentation context ``context_id``
    (e.g. the bytes following a file's meta information). Nothing is decoded. Fires no pynetdicom
    ``EVT_DIMSE_SENT``/``EVT_PDU_SENT`` events. Only for associations from :class:`LowLatencyAE`.

    :param assoc: an established association opened by a :class:`LowLatencyAE`.
    :param context_id: the accepted presentation context to send under.
    :param msg_id: the Message ID.
    :param sop_class_uid: the Affected SOP Class UID.
    :param sop_instance_uid: the Affected SOP Instance UID.
    :param dataset: the encoded data set.
    :param priority: 0 medium, 1 high, 2 low.
    :raises RawSendError: the connection failed.
    """
    sock = assoc.dul.socket
    if not isinstance(sock, LockedAssociationSocket) or sock.socket is None:
        raise RawSendError("the association has no usable socket")
    max_pdu = int(assoc.acceptor.maximum_length or 0)
    command = encode_c_store_rq(msg_id, sop_class_uid, sop_instance_uid, priority)
    parts = pdata_pdus(context_id, memoryview(command), command=True, max_pdu=max_pdu)
    parts += pdata_pdus(context_id, memoryview(dataset), command=False, max_pdu=max_pdu)
    with sock.write_lock:
        try:
            sock.socket.sendall(b"".join(parts))
        except OSError as exc:
            sock.event_queue.put("Evt17")
            raise RawSendError(str(exc)) from exc


def check_low_latency_requestor() -> list[str]:
    """Problems with the pynetdicom internals the low-latency requestor classes rely on (empty if none)."""
    problems: list[str] = []
    checks = {
        (_dul.DULServiceProvider, "run_reactor"): (
            "self._process_recv_primitive()",
            "self._is_transport_event()",
            "self.state_machine.do_action(event)",
            "time.sleep(self._run_loop_delay)",
            "self.artim_timer.expired",
        ),
        (_dul.DULServiceProvider, "__init__"): ("make_target(self.run_reactor)",),
        (_association.Association, "_run_reactor"): (
            "self.acse.is_release_requested()",
            "self.acse.is_aborted()",
            "self.dul.idle_timer_expired()",
            "self.dimse.get_msg(block=False)",
        ),
        (_association.Association, "__init__"): ("DULServiceProvider(self)", "make_target(self.run_reactor)"),
        (_ae.ApplicationEntity, "associate"): (
            "Association(self, MODE_REQUESTOR)",
            "self._create_socket(assoc, local_address, tls_args)",
            "assoc.request()",
        ),
        (_transport.AssociationSocket, "send"): ("self.socket.send(",),
    }
    for (cls, name), needles in checks.items():
        func = getattr(cls, name, None)
        if func is None:
            problems.append(f"{cls.__name__}.{name} no longer exists")
            continue
        source = inspect.getsource(func)
        for needle in needles:
            if needle not in source:
                problems.append(f"{cls.__name__}.{name} no longer contains {needle!r}")
    for event_name, handler_name in _STANDARD_LOG_HANDLERS:
        if not hasattr(_handlers, handler_name) or not hasattr(_evt, event_name):
            problems.append(f"pynetdicom no longer has {event_name} / {handler_name}")
    receive = inspect.getsource(_pdimse.DIMSEServiceProvider.receive_primitive)
    if "self.msg_queue.put((context_id" not in receive or "if self.message is None" not in receive:
        problems.append("DIMSEServiceProvider.receive_primitive changed")
    for attr in ("to_provider_queue", "event_queue", "_kill_thread", "_idle_timer", "artim_timer"):
        if attr not in inspect.getsource(_dul.DULServiceProvider.__init__):
            problems.append(f"DULServiceProvider no longer has {attr}")
    return problems


# ------------------------------------------------------------------------------------------------------
# Acceptor side: the event-driven receiver (issue "receiver"). Self-contained; used by make_receiver_ae.
# ------------------------------------------------------------------------------------------------------


try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - Python without OpenSSL
    _ssl = None  # type: ignore[assignment]

#
# The adjustments below make pynetdicom's *acceptor* event-driven instead of polling. Measured on the
# project machine (2 cores): pynetdicom's association reactor and its DUL loop each sleep a hard-coded
# ~1 ms between polls, so every C-STORE waits ~1-2 ms for nothing; the acceptor deep-copies the server's
# presentation contexts for every association (42 ms with every storage SOP class and every transfer
# syntax). The subclasses wait on the things that can actually happen instead (a decoded DIMSE message,
# data on the socket, a primitive queued for sending), which removes the polling latency without the
# CPU cost of a shorter sleep.

#: C-STORE-RQ command elements the fast decoder understands (anything else goes the standard way)
_C_STORE_RQ_TAGS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})


class FastStoreDIMSE(_pdimse.DIMSEServiceProvider):
    """DIMSE provider with a direct path for C-STORE-RQ in and C-STORE-RSP out.

    pydicom's encoding and decoding of the small DIMSE command sets was ~70% of the receiver's CPU per
    message. C-STORE requests are decoded here from the raw PDVs (the dataset fragments are joined, never
    decoded) and C-STORE responses are encoded directly; every other message, and any C-STORE message
    with an element this code does not know, takes pynetdicom's standard path. The direct path is used
    only while no ``EVT_DIMSE_RECV``/``EVT_DIMSE_SENT`` handler is bound (their handlers expect
    pynetdicom's message objects).
    """

    #: serve complete C-STORE requests in the DUL thread that decoded them instead of handing them to the
    #: association thread. Off: with it on, about one C-MOVE in ten from Orthanc with three parallel
    #: associations lost a C-STORE request (never served, the peer timed out after 10 s); with it off,
    #: 0 of 120 runs (/tmp loop of retrieve() to an embedded receiver, parallel=3).
    serve_in_dul_thread = False

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._standard = False  # the message being received goes pynetdicom's way
        self._pending: list[tuple[int, bytes]] = []  # PDVs of the message being received
        self._command: bytearray = bytearray()
        self._request: Any = None
        self._data: list[bytes] = []

    def _observed(self, event: Any) -> bool:
        return bool(self.assoc.get_handlers(event))

    def receive_primitive(self, primitive: Any) -> None:
        if self._standard:
            super().receive_primitive(primitive)
            if self.message is None:  # that message is complete
                self._standard = False
            return
        for index, (context_id, data) in enumerate(primitive.presentation_data_value_list):
            if self._standard:  # an earlier PDV of this primitive switched to the standard path
                rest = _pdu_primitives.P_DATA()
                rest.presentation_data_value_list = [
                    list(x) for x in primitive.presentation_data_value_list[index:]
                ]
                self.receive_primitive(rest)
                return
            self._receive_pdv(context_id, data)

    def _switch_to_standard(self) -> None:
        """Hand the PDVs buffered so far to pynetdicom's decoder; it takes the rest of the message."""
        pending, self._pending = self._pending, []
        self._command, self._data, self._request = bytearray(), [], None
        self._standard = True
        replay = _pdu_primitives.P_DATA()
        replay.presentation_data_value_list = [[cx, pdv] for cx, pdv in pending]
        super().receive_primitive(replay)
        if self.message is None:
            self._standard = False

    def _receive_pdv(self, context_id: int, data: bytes) -> None:
        header = data[0]
        self._pending.append((context_id, data))
        if header & 1:  # command fragment
            if self._request is not None:  # a command after the dataset began: let pynetdicom judge
                self._switch_to_standard()
                return
            self._command += data[1:]
            if header & 2:
                request = self._build_request(bytes(self._command))
                if request is None:
                    self._switch_to_standard()
                    return
                self._request = request
                if request is _NO_DATASET_REQUEST:
                    self._switch_to_standard()
            return
        if self._request is None:  # dataset before its command: let pynetdicom judge
            self._switch_to_standard()
            return
        self._data.append(data[1:])
        if header & 2:
            request = self._request
            request.DataSet = io.BytesIO(b"".join(self._data))
            self._pending, self._command, self._data, self._request = [], bytearray(), [], None
            if self.serve_in_dul_thread and self.msg_queue.empty():
                # store and answer right here: no hand-over to the association thread and back
                self.assoc._serve_request(request, context_id)
            else:
                self.msg_queue.put((context_id, request))

    def _build_request(self, command: bytes) -> Any:
        """A C_STORE primitive from a C-STORE-RQ command set; None to use the standard path."""
        if self._observed(_evt.EVT_DIMSE_RECV) or _config.STORE_RECV_CHUNKED_DATASET:
            return None
        elements = decode_command_set(command)
        if elements is None or not set(elements) <= _C_STORE_RQ_TAGS:
            return None
        try:
            if struct.unpack("<H", elements[0x0100])[0] != C_STORE_RQ:
                return None
            if struct.unpack("<H", elements[0x0800])[0] == NO_DATASET:
                return _NO_DATASET_REQUEST
            request = _primitives.C_STORE()
            request.MessageID = struct.unpack("<H", elements[0x0110])[0]
            if 0x0700 in elements:
                request.Priority = struct.unpack("<H", elements[0x0700])[0]
            if 0x1031 in elements:
                request.MoveOriginatorMessageID = struct.unpack("<H", elements[0x1031])[0]
            if 0x1030 in elements:
                request.MoveOriginatorApplicationEntityTitle = decode_text(elements[0x1030]) or None
        except (KeyError, struct.error, ValueError, TypeError):
            return None
        for element, name in ((0x0002, "AffectedSOPClassUID"), (0x1000, "AffectedSOPInstanceUID")):
            value = decode_text(elements.get(element, b""))
            try:
                setattr(request, name, value or None)
            except (ValueError, TypeError):
                # an invalid UID: leave it unset; the request is then incomplete and is refused with a
                # failure status by EventDrivenAssociation._serve_request (never dropped)
                setattr(request, name, None)
        return request

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (
            isinstance(primitive, _primitives.C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and primitive.ErrorComment is None
            and primitive.OffendingElement is None
            and not self._observed(_evt.EVT_DIMSE_SENT)
        ):
            command = encode_c_store_rsp(
                primitive.MessageIDBeingRespondedTo,
                primitive.Status,
                primitive.AffectedSOPClassUID,
                primitive.AffectedSOPInstanceUID,
            )
            max_pdu = self.maximum_pdu_size
            if not max_pdu or len(command) + 6 <= max_pdu:
                pdata = _pdu_primitives.P_DATA()
                pdata.presentation_data_value_list.append(
                    (context_id, bytes([COMMAND_LAST_FRAGMENT]) + command)
                )
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


#: marker: a C-STORE-RQ announcing no dataset (invalid; pynetdicom's path handles it)
_NO_DATASET_REQUEST = object()


class EventDrivenAssociation(_association.Association):
    """An acceptor association whose reactor waits for decoded DIMSE messages instead of polling."""

    def __init__(self, ae: Any, mode: Any) -> None:
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        self.dimse = FastStoreDIMSE(self)
        self.unbind_standard_log_handlers()
        # the timeouts are stored on the DUL's timers: set them again on the new provider
        self.acse_timeout = self.ae.acse_timeout
        self.connection_timeout = self.ae.connection_timeout
        self.dimse_timeout = self.ae.dimse_timeout
        self.network_timeout = self.ae.network_timeout

    def unbind_standard_log_handlers(self) -> None:
        """Unbind pynetdicom's standard DIMSE/PDU log handlers unless pynetdicom logs at DEBUG.

        They format every message (and disable the direct C-STORE path) even when nothing is logged.
        """
        if _association.LOGGER.isEnabledFor(logging.DEBUG):
            return
        self.unbind(_evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler)
        self.unbind(_evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler)
        self.unbind(_evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler)
        self.unbind(_evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler)

    def kill(self) -> None:
        super().kill()
        wake = getattr(self.dul, "wake", None)
        if wake is not None:
            wake()

    def _wait_for_message(self) -> None:
        """Block until the DIMSE message queue is not empty, or IDLE_WAIT has passed."""
        q = self.dimse.msg_queue
        with q.not_empty:
            if not q._qsize():
                q.not_empty.wait(IDLE_WAIT)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """Answer incomplete requests instead of ignoring them (a peer would wait for its DIMSE timeout).

        pynetdicom logs "Received unexpected ... service message" and drops a request that lacks a
        required parameter (e.g. a C-STORE without Affected SOP Instance UID); the sender then hangs until
        its DIMSE timeout. An incomplete C-STORE request goes to the storage service anyway, so the
        C-STORE handler refuses it with a failure status (and keeps the bytes); any other incomplete
        request aborts the association at once.
        """
        if self._sent_release or msg.is_valid_request:
            super()._serve_request(msg, context_id)
            return
        context = self._accepted_cx.get(context_id)
        if isinstance(msg, _primitives.C_STORE) and msg.MessageID is not None and context is not None:
            _association.LOGGER.warning("incomplete C-STORE request: answering it with a failure status")
            self._is_paused = True
            try:
                _service_class.StorageServiceClass(self).SCP(msg, context)
            finally:
                self._is_paused = False
            return
        _association.LOGGER.warning(f"incomplete {msg.msg_type} request: aborting the association")
        self.abort()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor reactor with the 1 ms ``time.sleep`` replaced by a queue wait."""
        self._is_paused = False
        while not self._kill:
            self._wait_for_message()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]
            if reactor_should_stop(self):
                return


class FastRequestHandler(_transport.RequestHandler):
    """Creates :class:`EventDrivenAssociation` acceptors sharing the server's presentation contexts.

    pynetdicom deep-copies the server's contexts for every association (42 ms with ~170 storage SOP
    classes x every transfer syntax); negotiation only reads them (it builds new result contexts), so a
    shallow copy of the list is enough.
    """

    def _create_association(self) -> _association.Association:
        assoc = EventDrivenAssociation(self.ae, _association.MODE_ACCEPTOR)
        assoc._server = self.server
        timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"
        sock = _transport.AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, _evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        assoc.unbind_standard_log_handlers()  # the server binds them too
        return assoc


class FastThreadedAssociationServer(NoDelayThreadedAssociationServer):
    """Threaded server: TCP_NODELAY, event-driven acceptors, no per-association deep copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", FastRequestHandler)
        super().__init__(*args, **kwargs)


class FastAssociationServer(NoDelayAssociationServer):
    """Blocking server: TCP_NODELAY, event-driven acceptors, no per-association deep copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", FastRequestHandler)
        super().__init__(*args, **kwargs)


_FAST_SERVER_SUBSTITUTES: dict[type, type] = {
    _transport.AssociationServer: FastAssociationServer,
    _transport.ThreadedAssociationServer: FastThreadedAssociationServer,
}


class ReceiverAE(TunedAE):
    """A :class:`TunedAE` whose servers use the event-driven acceptor (for storage SCPs)."""

    def make_server(self, address: Any, *args: Any, server_class: Any = None, **kwargs: Any) -> Any:
        server_class = _FAST_SERVER_SUBSTITUTES.get(
            server_class or _transport.AssociationServer, server_class
        )
        return _ae.ApplicationEntity.make_server(self, address, *args, server_class=server_class, **kwargs)


def make_receiver_ae(ae_title: str) -> ReceiverAE:
    """A new application entity for servers (receivers): TCP_NODELAY plus the event-driven acceptor.

    :param ae_title: our AE title.
    """
    return ReceiverAE(ae_title=ae_title)


#: sha256 (first 16 hex digits) of the pynetdicom functions the acceptor adjustments re-implement: a
#: change means the copy in this module must be reviewed against the new original.
_REIMPLEMENTED_SOURCES = {
    (_dul.DULServiceProvider, "run_reactor"): "e3a10eb3a0931e48",
    (_association.Association, "_run_reactor"): "f28838c5559e462a",
    (_transport.RequestHandler, "_create_association"): "05c8d12b79863cdb",
    # not re-implemented, but EventDrivenAssociation._serve_request relies on its handling of requests
    # FastStoreDIMSE relies on how these consume PDVs (self.message is None after a complete message)
    # and encode responses
    (_pdimse.DIMSEServiceProvider, "receive_primitive"): "5f99c86b14a15cef",
    (_pdimse.DIMSEServiceProvider, "send_msg"): "a839cf2fb46976d9",
    (_association.Association, "_serve_request"): "2f24c1759cdf6c8c",
}


def check_receiver_adjustments() -> list[str]:
    """Problems with the pynetdicom internals the acceptor adjustments depend on (empty if none)."""
    problems: list[str] = []
    for (cls, name), digest in _REIMPLEMENTED_SOURCES.items():
        func = getattr(cls, name, None)
        if func is None:
            problems.append(f"{cls.__name__}.{name} no longer exists")
            continue
        found = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
        if found != digest:
            problems.append(
                f"{cls.__name__}.{name} changed (source hash {found}, expected {digest}): review the "
                "re-implementation in airflow_dicom.dimse.tuning"
            )
    init_params = inspect.signature(_transport.AssociationServer.__init__).parameters
    if "request_handler" not in init_params:
        problems.append("AssociationServer.__init__ no longer takes request_handler")
    source = inspect.getsource(_association.Association.__init__)
    for needed in ("self.dul: DULServiceProvider = DULServiceProvider(self)", "self.dimse"):
        if needed not in source:
            problems.append(f"Association.__init__ no longer contains {needed!r}")
    dul_init = inspect.getsource(_dul.DULServiceProvider.__init__)
    if "self._run_loop_delay" not in dul_init:
        problems.append("DULServiceProvider no longer has _run_loop_delay")
    if "msg_queue" not in inspect.getsource(_pdimse.DIMSEServiceProvider.__init__):
        problems.append("DIMSEServiceProvider no longer has msg_queue")
    if not hasattr(queue.Queue(), "not_empty"):
        problems.append("queue.Queue has no not_empty condition")
    for name in (
        "standard_dimse_recv_handler",
        "standard_dimse_sent_handler",
        "standard_pdu_recv_handler",
        "standard_pdu_sent_handler",
    ):
        if not hasattr(_handlers, name):
            problems.append(f"pynetdicom._handlers.{name} is missing")
    if not hasattr(_config, "STORE_RECV_CHUNKED_DATASET"):
        problems.append("pynetdicom._config.STORE_RECV_CHUNKED_DATASET is missing")
    store = _primitives.C_STORE()
    for name in (
        "MessageID",
        "Priority",
        "AffectedSOPClassUID",
        "AffectedSOPInstanceUID",
        "DataSet",
        "MoveOriginatorApplicationEntityTitle",
        "MoveOriginatorMessageID",
        "ErrorComment",
        "OffendingElement",
        "Status",
        "MessageIDBeingRespondedTo",
    ):
        if not hasattr(store, name):
            problems.append(f"C_STORE primitive has no {name}")
    if not hasattr(_association.Association, "get_handlers"):
        problems.append("Association.get_handlers is missing")
    if not getattr(pynetdicom, "PYNETDICOM_IMPLEMENTATION_UID", None):
        problems.append("pynetdicom.PYNETDICOM_IMPLEMENTATION_UID is missing")
    return problems
