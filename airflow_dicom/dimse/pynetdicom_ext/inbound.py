"""The acceptor's C-STORE on one thread: the DUL thread reads the P-DATA, stores it and writes the answer.

Measured on the project machine (2 cores, dcmtk ``storescu`` sending 1,000 x 8 KB into our receiver): each
C-STORE went socket -> DUL thread (``select()``, a 6-byte read and 4 KB reads, pynetdicom's PDU objects,
the state machine's DT-2) -> DIMSE queue -> association thread (handler) -> DUL queue and wake-up pipe ->
DUL thread -> socket: ~37 system calls per instance (storescp: 13), 7 of them futex wake-ups, and two thread
hand-offs, each a scheduler round trip on a busy machine. Here, in state Sta6 (association established):

* :class:`InboundDUL` reads each PDU itself (header, then the body in one ``recv_into``) and gives a
  P-DATA-TF's presentation data values to the DIMSE provider at once, as pynetdicom's DT-2 action does
  (P-DATA in Sta6 changes no state). Every other PDU, and every PDU in another state, is handed to the
  state machine exactly as pynetdicom's own read would (decoded PDU + event).
* A complete C-STORE request whose handler is marked :func:`reader_safe` (the receiver's store handler) is
  served right there, in the DUL thread, by pynetdicom's own ``_serve_request`` (events, statuses,
  ``attempt``); its response is written to the socket by the same thread (:meth:`InboundDUL.write_now`)
  when nothing else is queued to send. Anything else (other handlers, other messages, a request while
  the association thread serves one, a request read before the association thread has marked the
  association established — a sender that writes at once after the A-ASSOCIATE-AC can win that race on a
  busy machine) goes the association thread's way, as before.

Off (pynetdicom's path) while a handler is bound to ``EVT_DATA_RECV`` or ``EVT_PDU_RECV`` (reads) or
``EVT_PDU_SENT`` (direct writes): those handlers expect pynetdicom's own PDU objects.
"""

from __future__ import annotations

import select
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pynetdicom import _config
from pynetdicom import dimse_primitives as _primitives
from pynetdicom import dul as _dul
from pynetdicom import events as _evt
from pynetdicom import pdu_primitives as _pdu_primitives
from pynetdicom import service_class as _service_class
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from airflow_dicom.dimse.pynetdicom_ext.negotiation import NegotiatingDUL

_PDU_HEADER = struct.Struct(">BBL")
_ITEM_LENGTH = struct.Struct(">L")
_P_DATA_TF = 0x04
_KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
#: the attribute :func:`reader_safe` sets on a handler
READER_SAFE_ATTRIBUTE = "_airflow_dicom_reader_safe"
#: events whose handlers expect pynetdicom's own reads / PDU writes
_READ_OBSERVERS = (_evt.EVT_DATA_RECV, _evt.EVT_PDU_RECV)
_WRITE_OBSERVERS = (_evt.EVT_PDU_SENT,)

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def reader_safe(handler: _Handler) -> _Handler:
    """Mark an ``EVT_C_STORE`` handler as safe to run in the DUL thread (see the module docstring).

    A safe handler returns a status without waiting on the association (no ``send_c_*``, no blocking
    ``abort``/``release``) and is thread-safe. Unmarked handlers run in the association thread, as
    pynetdicom runs them.

    :param handler: the handler function (a method works: the mark is read through the bound method).
    """
    setattr(handler, READER_SAFE_ATTRIBUTE, True)
    return handler


def _observed(assoc: Any, events: tuple[Any, ...]) -> bool:
    return any(assoc.get_handlers(event) for event in events)


def store_served_by_reader(assoc: Any, request: Any, context_id: int) -> bool:
    """True when the complete C-STORE ``request`` may be served by the DUL thread that read it.

    :param assoc: the acceptor association.
    :param request: the C_STORE request primitive (data set joined).
    :param context_id: its presentation context ID.
    """
    dul = assoc.dul
    if not isinstance(dul, InboundDUL) or threading.current_thread() is not dul:
        return False
    if assoc._sent_release or not assoc.is_established or not request.is_valid_request:
        return False
    if assoc.dimse.msg_queue.qsize() or getattr(assoc, "serving", False):  # this order (see the reactor)
        return False  # the association thread serves (or will serve) an earlier message: keep the order
    if context_id not in assoc._accepted_cx:
        return False  # pynetdicom aborts (blocking): only from the association thread
    handler = assoc.get_handlers(_evt.EVT_C_STORE)
    if not isinstance(handler, tuple) or not getattr(handler[0], READER_SAFE_ATTRIBUTE, False):
        return False
    if _config.UNRESTRICTED_STORAGE_SERVICE:
        return True
    if request.AffectedSOPClassUID in assoc.acceptor.accepted_common_extended:
        return False
    try:
        return uid_to_service_class(request.AffectedSOPClassUID) is StorageServiceClass
    except Exception:
        return False


def serve_store(assoc: Any, request: Any, context_id: int) -> None:
    """pynetdicom 3.0's ``StorageServiceClass.SCP`` for a request :func:`store_served_by_reader` admitted.

    The same steps (``EVT_C_STORE`` triggered with ``abort`` non-blocking, an exception in the handler
    answered 0xC211 and logged, no answer once the association is gone, an unknown status logged and
    sent); a plain integer status is answered by ``assoc.dimse.send_store_status`` (codec-encoded, no
    response primitive), anything else (a status data set) through pynetdicom's response primitive.

    :param assoc: the acceptor association.
    :param request: the C_STORE request primitive.
    :param context_id: its (accepted) presentation context ID.
    """
    context = assoc._accepted_cx[context_id]
    dimse = assoc.dimse
    dimse.cancel_req = {}
    assoc.abort = assoc._abort_nonblocking  # pynetdicom's attempt(): a handler's abort must not wait
    try:
        status = _evt.trigger(assoc, _evt.EVT_C_STORE, {"request": request, "context": context.as_tuple})
    except Exception as exc:
        assoc.abort = assoc._abort_blocking
        _service_class.LOGGER.error("Exception in handler bound to 'evt.EVT_C_STORE'")
        _service_class.LOGGER.exception(exc)
        rsp = _response(request)
        rsp.Status = 0xC211
        dimse.send_msg(rsp, context_id)
        return
    assoc.abort = assoc._abort_blocking
    dimse.cancel_req = {}
    if not assoc.is_established:
        return
    service = StorageServiceClass(assoc)
    if isinstance(status, int):
        if not service.is_valid_status(status):
            _service_class.LOGGER.warning(f"Unknown status value returned by callback - 0x{status:04X}")
        dimse.send_store_status(context_id, request, int(status))
        return
    dimse.send_msg(service.validate_status(status, _response(request)), context_id)


def _response(request: Any) -> Any:
    """pynetdicom's C-STORE response primitive for ``request`` (as ``StorageServiceClass.SCP`` builds it)."""
    rsp = _primitives.C_STORE()
    rsp.MessageID = request.MessageID
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    return rsp


class InboundDUL(NegotiatingDUL):
    """:class:`~.negotiation.NegotiatingDUL` reading PDUs itself in Sta6, writing C-STORE answers at once.

    Replaces ``DULServiceProvider._is_transport_event`` in state Sta6 (every other state: pynetdicom's).
    """

    def __init__(self, assoc: Any, idle_wait: float) -> None:
        super().__init__(assoc, idle_wait)
        self._body = bytearray()

    def _reads_directly(self) -> bool:
        return (
            self.state_machine.current_state == "Sta6"
            and self.socket is not None
            and self.socket.socket is not None
            and bool(self.socket._is_connected)
            and not _observed(self.assoc, _READ_OBSERVERS)
        )

    def _is_transport_event(self) -> bool:
        readable, self._socket_readable = self._socket_readable, False
        if not self._reads_directly():
            return bool(super()._is_transport_event())
        sock = self.socket.socket
        if not readable:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                readable = True
            else:
                try:
                    readable = bool(select.select([sock], [], [], 0)[0])
                except (OSError, ValueError):
                    self.event_queue.put("Evt17")
                    return False
        if not readable:
            return False
        self._read_pdu(sock)
        return True

    def _read_pdu(self, sock: Any) -> None:
        """Read one PDU: a P-DATA-TF goes to the DIMSE provider, anything else to the state machine."""
        try:
            header = _recv_exact(sock, 6)
        except (OSError, TimeoutError) as exc:
            _dul.LOGGER.error("Connection closed before the entire PDU was received")
            _dul.LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(header) < 6:
            self.event_queue.put("Evt17")  # closed by the peer (pynetdicom: READ_PDU_EXC_B)
            return
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        if pdu_type not in _KNOWN_PDU_TYPES:
            _dul.LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")
            return
        try:
            body = _recv_body(sock, length)
        except (OSError, TimeoutError) as exc:
            _dul.LOGGER.error("Connection closed before the entire PDU was received")
            _dul.LOGGER.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            _dul.LOGGER.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of {6 + length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return
        values = _presentation_data_values(body) if pdu_type == _P_DATA_TF else None
        if values is None:  # not P-DATA, or one pynetdicom must judge: its own decoding and events
            self._hand_over(header + body)
            return
        primitive = _pdu_primitives.P_DATA()
        primitive.presentation_data_value_list = values
        self.assoc.dimse.receive_primitive(primitive)  # pynetdicom's DT-2 (Sta6 -> Sta6)

    def _hand_over(self, data: bytes) -> None:
        """Queue a PDU read here exactly as pynetdicom's ``_read_pdu_data`` does."""
        try:
            pdu, event = self._decode_pdu(bytearray(data))
            self.event_queue.put(event)
        except Exception as exc:
            _dul.LOGGER.error("Unable to decode the received PDU data")
            _dul.LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    def write_now(self, data: bytes) -> bool:
        """Write an encoded P-DATA-TF PDU now, from the DUL thread; False when it must be queued instead.

        :param data: the whole PDU.
        """
        if (
            threading.current_thread() is not self
            or self.state_machine.current_state != "Sta6"
            or self.to_provider_queue.qsize()
            or self.socket is None
            or _observed(self.assoc, _WRITE_OBSERVERS)
        ):
            return False
        self.socket.send(data)  # pynetdicom's DT-1 write (EVT_DATA_SENT, Evt17 on failure)
        return True


def _recv_exact(sock: Any, count: int) -> bytes:
    """Up to ``count`` bytes (fewer only if the peer closed the connection)."""
    data = sock.recv(count)
    while data and len(data) < count:
        more = sock.recv(count - len(data))
        if not more:
            break
        data += more
    return data


def _recv_body(sock: Any, length: int) -> bytes:
    """The ``length`` bytes of a PDU body, read into one buffer (fewer only if the peer closed)."""
    if not length:
        return b""
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    while got < length:
        count = sock.recv_into(view[got:], length - got)
        if not count:
            return bytes(view[:got])
        got += count
    return buffer


def _presentation_data_values(body: bytes) -> list[list[Any]] | None:
    """A P-DATA-TF body's ``[context ID, PDV data]`` pairs, as pynetdicom's primitive holds them.

    None when the items do not tile the body exactly or a PDV lacks its message control header:
    pynetdicom's decoder then judges the PDU.
    """
    values: list[list[Any]] = []
    offset = 0
    end = len(body)
    view = memoryview(body)
    while offset < end:
        if offset + 6 > end:
            return None
        (length,) = _ITEM_LENGTH.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            return None
        values.append([body[offset + 4], bytes(view[offset + 5 : offset + 4 + length])])
        offset += 4 + length
    return values or None
