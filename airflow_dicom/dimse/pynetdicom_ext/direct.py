"""The C-STORE response read by the thread that sent the request, not handed over by the DUL thread.

Measured on pynetdicom 3.0.4 (1,000 x 8 KB C-STOREs to dcmtk's storescp over loopback): after the request
was written, each response went socket -> DUL thread (``select()`` wake-up, pynetdicom's PDU decoding, the
state machine's DT-2 action) -> DIMSE queue -> the sending thread: two thread wake-ups and the PDU objects
for every message. Here the sending thread owns the socket's read side for one exchange
(:meth:`RequestorDUL.reading`): it reads the response PDU itself and decodes it with the codec. The DUL
thread keeps its loop (timers, release, abort, PDUs we send) but leaves the socket alone meanwhile.

Anything but a one-PDV C-STORE-RSP (an A-ABORT, an A-RELEASE-RQ, a fragmented or unexpected message) is
handed to the DUL exactly as its own read would have (decoded PDU + state machine event) and the exchange
goes on pynetdicom's way. P-DATA in state Sta6 is action DT-2 only (no state change), so reading it here
leaves the state machine where pynetdicom's own read would.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from pynetdicom import events as _evt

from airflow_dicom.dimse.codec import COMMAND_LAST_FRAGMENT, StoreResponse, decode_c_store_rsp
from airflow_dicom.dimse.errors import LostResponseError
from airflow_dicom.dimse.pynetdicom_ext.reactors import SelectDUL

_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")
_P_DATA_TF = 0x04
#: events whose handlers expect pynetdicom's own reads (their presence turns the direct read off)
_READ_EVENTS = (_evt.EVT_DATA_RECV, _evt.EVT_PDU_RECV, _evt.EVT_DIMSE_RECV)


class RequestorDUL(SelectDUL):
    """:class:`~.reactors.SelectDUL` whose socket reads can be lent to the thread sending a C-STORE.

    While :meth:`reading` is held, ``_is_transport_event`` does not touch the socket and the idle wait
    listens to the wake-up pipe only (data waiting for the other thread must not make this loop spin).
    """

    def __init__(self, assoc: Any, idle_wait: float) -> None:
        super().__init__(assoc, idle_wait)
        self._read_lock = threading.Lock()
        self._handed_over = False  # a PDU was handed over during the current hold

    def _is_transport_event(self) -> bool:
        if not self._read_lock.acquire(blocking=False):
            return False  # the sending thread reads the socket now
        try:
            return bool(super()._is_transport_event())
        finally:
            self._read_lock.release()

    def _idle_wait(self) -> None:
        if not self._read_lock.locked():
            super()._idle_wait()
            return
        wake_r = self._wake_r
        if wake_r is None:
            time.sleep(self.idle_wait)
            return
        try:
            readable, _, _ = select.select([wake_r], [], [], self.idle_wait)
        except (OSError, ValueError):
            return
        if readable:
            try:
                os.read(wake_r, 4096)
            except OSError:
                pass

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the socket's read side (the DUL thread leaves it alone) for one request/response exchange."""
        self._read_lock.acquire()
        try:
            yield
        finally:
            self._read_lock.release()
            # no wake-up per message (it would cost the DUL thread a turn each time): a DUL waiting without
            # the socket comes back to it within its idle wait, at once if it has a PDU to act on
            if self._handed_over:
                self._handed_over = False
                self.wake()

    def hand_over(self, pdu_bytes: bytes) -> None:
        """Give the DUL a PDU this thread read, as its own ``_read_pdu_data`` would have queued it.

        :param pdu_bytes: the whole PDU (header included).
        """
        try:
            pdu, event = self._decode_pdu(bytearray(pdu_bytes))
        except Exception:
            self.event_queue.put("Evt19")  # unrecognised or invalid PDU, as pynetdicom's read reports it
            self._handed_over = True
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)
        self._handed_over = True


def direct_read_possible(assoc: Any) -> bool:
    """True when the response may be read by the sending thread (see the module docstring).

    :param assoc: the association.
    """
    dul = assoc.dul
    if not isinstance(dul, RequestorDUL) or dul.state_machine.current_state != "Sta6":
        return False
    return not any(assoc.get_handlers(event) for event in _READ_EVENTS)


class _Reader:
    """Reads whole PDUs from a socket before a deadline."""

    def __init__(self, sock: Any, deadline: float, timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout

    def exact(self, count: int) -> bytes:
        chunks: list[bytes] = []
        missing = count
        sock = self.sock
        while missing:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise LostResponseError(f"no C-STORE response within {self.timeout:g} s")
                readable, _, _ = select.select([sock], [], [], remaining)
                if not readable:
                    raise LostResponseError(f"no C-STORE response within {self.timeout:g} s")
            chunk = sock.recv(missing)
            if not chunk:
                raise ConnectionResetError("the peer closed the connection")
            chunks.append(chunk)
            missing -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_store_response(assoc: Any, msg_id: int, timeout: float) -> StoreResponse | None:
    """Read the C-STORE-RSP to ``msg_id`` from the socket (the caller holds :meth:`RequestorDUL.reading`).

    :param assoc: the association (its DUL is a :class:`RequestorDUL`).
    :param msg_id: the request's Message ID.
    :param timeout: seconds to wait for it.
    :returns: the response; None when a PDU was handed to the DUL instead (wait for the response on the
        DIMSE queue, pynetdicom's way).
    :raises LostResponseError: no response in time, or the connection failed (the association is unusable).
    """
    dul: RequestorDUL = assoc.dul
    sock = dul.socket.socket
    reader = _Reader(sock, time.monotonic() + timeout, timeout)
    try:
        header = reader.exact(6)
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        body = reader.exact(length) if length else b""
    except LostResponseError:
        raise
    except (OSError, ValueError) as exc:
        dul.event_queue.put("Evt17")  # transport closed: the DUL's state machine aborts
        dul._handed_over = True
        raise LostResponseError(f"the connection failed before the C-STORE response: {exc}") from exc
    dul._idle_timer.restart()
    if pdu_type == _P_DATA_TF and len(body) >= 6:
        pdv_length, _, control = _PDV_HEADER.unpack_from(body)
        if pdv_length + 4 == len(body) and control == COMMAND_LAST_FRAGMENT:
            rsp = decode_c_store_rsp(body[6:])
            if rsp is not None and rsp.MessageIDBeingRespondedTo == msg_id:
                return rsp
    dul.hand_over(header + body)
    return None
