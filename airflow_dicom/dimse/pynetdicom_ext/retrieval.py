"""C-MOVE and C-GET on associations we request: their messages decoded and encoded by the codec.

Measured on the scale set (Orthanc 1.10.1, ~5 instances per study): every instance of a C-MOVE costs a
pending C-MOVE-RSP on our association, every instance of a C-GET a C-STORE-RQ, its C-STORE-RSP and a pending
C-GET-RSP; pynetdicom decodes each command set with pydicom (and each C-STORE-RSP is encoded with it), about
a third of a millisecond of CPU each on the 2-core machine, on the path every sub-operation waits for.

:class:`RetrieveDIMSE` is the DIMSE provider of :class:`~.requestor.RequestorAssociation` (through
:class:`~.requestor.StoreResponseDIMSE`). On an association that proposed a C-MOVE or C-GET model it decodes
with the codec: C-MOVE-RSP and C-GET-RSP messages without a data set (every pending response, most final
ones) into pynetdicom's ``C_MOVE``/``C_GET`` primitives, and the C-STOREs of a C-GET into ``C_STORE``
primitives whose data set is never decoded (:class:`~.acceptor.StoreRequestDIMSE`); their responses are
encoded by the codec and written to the socket by the requesting thread. pynetdicom's ``send_c_move`` and
``send_c_get`` then run unchanged: the primitives are the ones its decoder makes. Anything else (other
associations, responses with an identifier, unknown elements, bound ``EVT_DIMSE_RECV`` handlers) takes
pynetdicom's path.
"""

from __future__ import annotations

import io
from typing import Any

from pynetdicom import dimse as _pdimse
from pynetdicom import dimse_primitives as _primitives
from pynetdicom import events as _evt

from airflow_dicom.dimse.codec import (
    COMMAND_LAST_FRAGMENT,
    NO_DATASET,
    decode_command_set,
    decode_text,
    encode_c_store_rsp,
    pdata_pdus,
    us_value,
)
from airflow_dicom.dimse.pynetdicom_ext.acceptor import StoreRequestDIMSE
from airflow_dicom.dimse.pynetdicom_ext.sockets import RequestorSocket

#: Command Field of the responses decoded here (PS3.7 E.1) and the primitive each becomes
_RESPONSES = {0x8010: _primitives.C_GET, 0x8021: _primitives.C_MOVE}
#: Status Type UIDs of the Query/Retrieve MOVE and GET models (PS3.4 C.6): associations that retrieve
_RETRIEVE_MODELS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root GET
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
        "1.2.840.10008.5.1.4.1.2.3.2",  # Patient/Study Only MOVE (retired)
        "1.2.840.10008.5.1.4.1.2.3.3",  # Patient/Study Only GET (retired)
        "1.2.840.10008.5.1.4.20.2",  # Composite Instance Root MOVE
        "1.2.840.10008.5.1.4.20.3",  # Composite Instance Root GET
        "1.2.840.10008.5.1.4.1.2.5.3",  # Composite Instance Retrieve Without Bulk Data GET
    }
)
#: command elements of a C-MOVE-RSP / C-GET-RSP the direct path understands (PS3.7 C.4.2.1, C.4.3.1)
_RESPONSE_ELEMENTS = frozenset(
    {0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x0902, 0x1020, 0x1021, 0x1022, 0x1023}
)
_COUNTS = (
    (0x1020, "NumberOfRemainingSuboperations"),
    (0x1021, "NumberOfCompletedSuboperations"),
    (0x1022, "NumberOfFailedSuboperations"),
    (0x1023, "NumberOfWarningSuboperations"),
)


def decode_retrieve_response(command: bytes) -> Any:
    """A C-MOVE-RSP or C-GET-RSP command set without a data set as pynetdicom's primitive, else None.

    :param command: the encoded command set.
    """
    elements = decode_command_set(command)
    if elements is None or not set(elements) <= _RESPONSE_ELEMENTS:
        return None
    kind = _RESPONSES.get(us_value(elements.get(0x0100)))  # type: ignore[arg-type]
    responding_to = us_value(elements.get(0x0120))
    status = us_value(elements.get(0x0900))
    if kind is None or responding_to is None or status is None:
        return None
    if us_value(elements.get(0x0800)) != NO_DATASET:
        return None
    primitive = kind()
    try:
        primitive.MessageIDBeingRespondedTo = responding_to
        primitive.Status = status
        if 0x0002 in elements:
            primitive.AffectedSOPClassUID = decode_text(elements[0x0002]) or None
        if 0x0902 in elements:
            primitive.ErrorComment = decode_text(elements[0x0902]) or None
        for element, keyword in _COUNTS:
            if element in elements:
                value = us_value(elements[element])
                if value is None:
                    return None
                setattr(primitive, keyword, value)
    except (ValueError, TypeError):
        return None
    primitive.Identifier = io.BytesIO()  # as pynetdicom's decoder leaves a message without a data set
    return primitive


class RetrieveDIMSE(StoreRequestDIMSE):
    """The requestor's DIMSE provider: C-MOVE/C-GET messages through the codec (see the module docstring).

    Replaces ``DIMSEServiceProvider.receive_primitive`` (and ``send_msg`` for C-STORE-RSP, through
    :class:`~.acceptor.StoreRequestDIMSE`) on associations that proposed a C-MOVE or C-GET model; on any
    other association every message takes pynetdicom's path.
    """

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._retrieves: bool | None = None
        self._context_id: int | None = None

    def retrieves(self) -> bool:
        """True when the association proposed a C-MOVE or C-GET model (decided once, on first use)."""
        if self._retrieves is None:
            contexts = self.assoc.requestor.requested_contexts or []
            self._retrieves = any(str(cx.abstract_syntax) in _RETRIEVE_MODELS for cx in contexts)
        return self._retrieves

    def receive_primitive(self, primitive: Any) -> None:
        """Decode a received P-DATA (see the class docstring).

        :param primitive: the P-DATA primitive.
        """
        if not self.retrieves():
            _pdimse.DIMSEServiceProvider.receive_primitive(self, primitive)
            return
        pdvs = primitive.presentation_data_value_list
        if len(pdvs) == 1 and not self._standard and not self._pending:
            context_id, data = pdvs[0]
            if data[:1] == bytes([COMMAND_LAST_FRAGMENT]) and not self._observed(_evt.EVT_DIMSE_RECV):
                response = decode_retrieve_response(bytes(data[1:]))
                if response is not None:
                    response._context_id = context_id
                    self.msg_queue.put((context_id, response))
                    return
        super().receive_primitive(primitive)

    def _receive_pdv(self, context_id: int, data: bytes) -> None:
        self._context_id = context_id
        super()._receive_pdv(context_id, data)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message; a C-GET's plain C-STORE-RSP is written to the socket by this thread.

        The response is encoded by the codec and framed here, and written under the socket's write lock (as
        :func:`~.requestor.send_c_store` writes requests): the PACS waits for it before its next C-STORE, and
        the hop through the DUL thread cost a thread wake-up per instance. Anything else: see the base class.

        :param primitive: the message primitive.
        :param context_id: its presentation context.
        """
        sock = self.dul.socket
        plain = isinstance(primitive, _primitives.C_STORE) and primitive.MessageIDBeingRespondedTo is not None
        if not (plain and isinstance(sock, RequestorSocket) and sock.socket is not None and self.retrieves()):
            super().send_msg(primitive, context_id)
            return
        extra = (primitive.ErrorComment, primitive.OffendingElement)
        if primitive.Status is None or extra != (None, None):
            super().send_msg(primitive, context_id)
            return
        if self._observed(_evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        command = encode_c_store_rsp(
            primitive.MessageIDBeingRespondedTo,
            primitive.Status,
            primitive.AffectedSOPClassUID,
            primitive.AffectedSOPInstanceUID,
        )
        pdus = pdata_pdus(context_id, memoryview(command), command=True, max_pdu=self.maximum_pdu_size)
        with sock.write_lock:
            try:
                sock.socket.sendall(b"".join(pdus))
            except OSError:
                sock.event_queue.put("Evt17")  # transport closed: the DUL's state machine aborts

    def _build_request(self, command: bytes) -> Any:
        request = super()._build_request(command)
        if isinstance(request, _primitives.C_STORE):
            request._context_id = self._context_id  # pynetdicom's C-STORE SCP of C-GET looks it up
        return request
