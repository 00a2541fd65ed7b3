"""The acceptor side: associations our receiver serves, event-driven, with C-STOREs decoded by the codec.

Measured on the project machine (2 cores): pynetdicom's association reactor and DUL loop each sleep ~1 ms
between polls, so every C-STORE waited 1-2 ms for nothing; pydicom's encoding and decoding of the small
command sets was ~70% of the receiver's CPU per message; and the acceptor deep-copied the server's
presentation contexts for every association (42 ms with every storage SOP class x every transfer syntax).
The classes here wait on what can actually happen (a decoded DIMSE message, data on the socket, a PDU to
send), decode C-STORE requests and encode their responses with the codec, and share the contexts.
"""

from __future__ import annotations

import functools
import gc
import io
from datetime import datetime
from typing import Any

from pynetdicom import _config
from pynetdicom import association as _association
from pynetdicom import dimse as _pdimse
from pynetdicom import dimse_primitives as _primitives
from pynetdicom import events as _evt
from pynetdicom import pdu_primitives as _pdu_primitives
from pynetdicom import service_class as _service_class
from pynetdicom import transport as _transport

from airflow_dicom.dimse.codec import (
    C_STORE_RQ,
    COMMAND_LAST_FRAGMENT,
    NO_DATASET,
    decode_command_set,
    decode_text,
    encode_c_store_rsp,
    pdata_pdus,
    us_value,
)
from airflow_dicom.dimse.pynetdicom_ext.admission import AdmittingServer
from airflow_dicom.dimse.pynetdicom_ext.inbound import InboundDUL, serve_store, store_served_by_reader
from airflow_dicom.dimse.pynetdicom_ext.negotiation import NegotiatingACSE, NegotiationCache
from airflow_dicom.dimse.pynetdicom_ext.reactors import (
    ACCEPTOR_IDLE_WAIT,
    OwnProvidersAssociation,
    reactor_should_stop,
    unbind_log_handlers,
)
from airflow_dicom.dimse.pynetdicom_ext.sockets import NoDelayAE, NoDelayServer, ThreadedNoDelayServer

#: C-STORE-RQ command elements the direct path understands (a request with any other goes pynetdicom's way)
_C_STORE_RQ_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031})
#: marker: a C-STORE-RQ announcing no data set (invalid; pynetdicom's path handles it)
_NO_DATASET_REQUEST = object()


class StoreRequestDIMSE(_pdimse.DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with a direct path for C-STORE-RQ in and C-STORE-RSP out.

    Replaces ``DIMSEServiceProvider.receive_primitive`` and ``send_msg``. A C-STORE request's command set
    is decoded by the codec from the raw PDVs and its data set fragments are joined, never decoded (the
    request's ``DataSet`` is a ``BytesIO``, as pynetdicom gives it); a C-STORE response is encoded by the
    codec. Every other message, a C-STORE with an element the codec path does not know, and any message
    while an ``EVT_DIMSE_RECV``/``EVT_DIMSE_SENT`` handler is bound (those handlers expect pynetdicom's
    message objects) or ``STORE_RECV_CHUNKED_DATASET`` is on, take pynetdicom's path.

    A complete C-STORE whose handler is marked :func:`~.inbound.reader_safe` is served by the DUL thread
    that read it and answered on the socket by that thread (:mod:`.inbound`); every other request is
    served in the association thread, as pynetdicom does.
    """

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
        """Take the PDVs of a received P-DATA (see the class docstring).

        :param primitive: the P-DATA primitive.
        """
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
            if self._request is not None:  # a command after the data set began: let pynetdicom judge
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
        if self._request is None:  # data set before its command: let pynetdicom judge
            self._switch_to_standard()
            return
        self._data.append(data[1:])
        if header & 2:
            request = self._request
            request.DataSet = io.BytesIO(b"".join(self._data))
            self._pending, self._command, self._data, self._request = [], bytearray(), [], None
            if not self._serve_in_reader(context_id, request):
                self.msg_queue.put((context_id, request))

    def _serve_in_reader(self, context_id: int, request: Any) -> bool:
        """Serve a complete C-STORE in this (the DUL) thread when :mod:`.inbound` allows it.

        What pynetdicom's ``Association._serve_request`` does for a valid C-STORE on an accepted context
        of a storage SOP class (the conditions :func:`~.inbound.store_served_by_reader` checks).
        """
        if not store_served_by_reader(self.assoc, request, context_id):
            return False
        serve_store(self.assoc, request, context_id)
        return True

    def _build_request(self, command: bytes) -> Any:
        """A C_STORE primitive from a C-STORE-RQ command set; None to use pynetdicom's path."""
        if self._observed(_evt.EVT_DIMSE_RECV) or _config.STORE_RECV_CHUNKED_DATASET:
            return None
        elements = decode_command_set(command)
        if elements is None or not set(elements) <= _C_STORE_RQ_ELEMENTS:
            return None
        if us_value(elements.get(0x0100)) != C_STORE_RQ or us_value(elements.get(0x0110)) is None:
            return None
        data_set_type = us_value(elements.get(0x0800))
        if data_set_type is None:
            return None
        if data_set_type == NO_DATASET:
            return _NO_DATASET_REQUEST
        request = _primitives.C_STORE()
        try:
            request.MessageID = us_value(elements[0x0110])
            if 0x0700 in elements:
                request.Priority = us_value(elements[0x0700])
            if 0x1031 in elements:
                request.MoveOriginatorMessageID = us_value(elements[0x1031])
            if 0x1030 in elements:
                request.MoveOriginatorApplicationEntityTitle = decode_text(elements[0x1030]) or None
        except (ValueError, TypeError):
            return None
        for element, name in ((0x0002, "AffectedSOPClassUID"), (0x1000, "AffectedSOPInstanceUID")):
            try:
                setattr(request, name, decode_text(elements.get(element, b"")) or None)
            except (ValueError, TypeError):
                # an invalid UID: left unset; the request is then incomplete and is refused with a failure
                # status by AcceptorAssociation._serve_request (never dropped)
                setattr(request, name, None)
        return request

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message (pynetdicom's ``send_msg``); a plain C-STORE-RSP is encoded by the codec.

        :param primitive: the message primitive.
        :param context_id: its presentation context.
        """
        if (
            isinstance(primitive, _primitives.C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.Status is not None
            and primitive.ErrorComment is None
            and primitive.OffendingElement is None
            and self._send_store_rsp(
                context_id,
                primitive.MessageIDBeingRespondedTo,
                primitive.Status,
                primitive.AffectedSOPClassUID,
                primitive.AffectedSOPInstanceUID,
            )
        ):
            return
        super().send_msg(primitive, context_id)

    def send_store_status(self, context_id: int, request: Any, status: int) -> None:
        """Answer the C-STORE ``request`` with ``status`` alone (what pynetdicom's SCP sends for an int).

        :param context_id: the request's presentation context.
        :param request: the C_STORE request primitive.
        :param status: the status.
        """
        cls, instance = request.AffectedSOPClassUID, request.AffectedSOPInstanceUID
        if not self._send_store_rsp(context_id, request.MessageID, status, cls, instance):
            rsp = _primitives.C_STORE()
            rsp.MessageID = rsp.MessageIDBeingRespondedTo = request.MessageID
            rsp.AffectedSOPInstanceUID, rsp.AffectedSOPClassUID = instance, cls
            rsp.Status = status
            super().send_msg(rsp, context_id)

    def _send_store_rsp(self, context_id: int, msg_id: int, status: int, cls: Any, instance: Any) -> bool:
        """Send a C-STORE-RSP without optional elements, codec-encoded; False to use pynetdicom's way."""
        if self._observed(_evt.EVT_DIMSE_SENT):
            return False
        command = encode_c_store_rsp(msg_id, status, cls, instance)
        max_pdu = self.maximum_pdu_size
        if max_pdu and len(command) + 6 > max_pdu:
            return False
        dul = self.dul
        if isinstance(dul, InboundDUL):
            pdu = b"".join(pdata_pdus(context_id, memoryview(command), command=True, max_pdu=max_pdu))
            if dul.write_now(pdu):
                return True
        pdata = _pdu_primitives.P_DATA()
        pdata.presentation_data_value_list.append((context_id, bytes([COMMAND_LAST_FRAGMENT]) + command))
        dul.send_pdu(pdata)
        return True


class AcceptorAssociation(OwnProvidersAssociation):
    """An association our server accepts, whose reactor waits for decoded DIMSE messages.

    Replaces ``Association._run_reactor`` (for acceptors) and ``_serve_request``. The reactor is pynetdicom
    3.0's with its 1 ms ``time.sleep`` replaced by a wait on the DIMSE queue; the end-of-association step is
    :func:`~.reactors.reactor_should_stop`. Incomplete requests are answered instead of dropped (see
    :meth:`_serve_request`).
    """

    dul_idle_wait = ACCEPTOR_IDLE_WAIT
    dimse_class = StoreRequestDIMSE
    dul_class = InboundDUL
    acse_class = NegotiatingACSE
    #: the association thread is serving a request (the DUL thread then leaves the next one to it)
    serving = False
    #: called once when the association thread ends (the server's per-peer bookkeeping)
    on_end: Any = None
    #: the server's negotiation cache (:mod:`.negotiation`), None for none
    negotiation_cache: NegotiationCache | None = None

    def run(self) -> None:
        """pynetdicom's association thread, then :attr:`on_end`."""
        try:
            super().run()
        finally:
            if self.on_end is not None:
                self.on_end()

    def _wait_for_message(self) -> None:
        """Block until the DIMSE message queue is not empty, or the idle wait has passed."""
        q = self.dimse.msg_queue
        with q.not_empty:
            if not q._qsize():
                q.not_empty.wait(ACCEPTOR_IDLE_WAIT)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """pynetdicom's ``_serve_request``, answering incomplete requests instead of ignoring them.

        pynetdicom logs "Received unexpected ... service message" and drops a request that lacks a required
        parameter (e.g. a C-STORE without Affected SOP Instance UID); the sender then hangs until its DIMSE
        timeout. An incomplete C-STORE goes to the storage service anyway, so the C-STORE handler refuses
        it with a failure status (and keeps the bytes); any other incomplete request aborts the association.

        :param msg: the decoded request.
        :param context_id: its presentation context.
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
        self._is_paused = False
        while not self._kill:
            self._wait_for_message()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if self.dimse.msg_queue.qsize():
                # flagged before the message leaves the queue: the DUL thread, which looks at the queue
                # first and then at the flag, never serves a later C-STORE while this one is served
                self.serving = True
                try:
                    context_id, msg = self.dimse.get_msg(block=False)
                    if msg:
                        self._serve_request(msg, context_id)  # type: ignore[arg-type]
                finally:
                    self.serving = False
            if reactor_should_stop(self):
                return


class AcceptorRequestHandler(_transport.RequestHandler):
    """pynetdicom's request handler creating :class:`AcceptorAssociation` acceptors.

    Replaces ``RequestHandler._create_association``. The difference besides the class: the server's
    presentation contexts are shared (a shallow copy of the list) instead of deep-copied for every
    association; negotiation only reads them (it builds new result contexts).
    """

    def _create_association(self) -> _association.Association:
        assoc = AcceptorAssociation(self.ae, _association.MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(_transport.AssociationSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = list(self.server.contexts)
        assoc.negotiation_cache = getattr(self.server, "negotiation_cache", None)
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, _evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        unbind_log_handlers(assoc)  # the server binds them too
        if isinstance(self.server, AdmittingServer):
            assoc.on_end = functools.partial(self.server.release_peer, str(self.client_address[0]))
        return assoc


class _YoungCollections:
    """Server mixin: the periodic garbage collection of pynetdicom's accept loop, young generations only.

    Replaces ``AssociationServer.service_actions``, which runs a full ``gc.collect()`` every 60 accepted
    connections (for associations it found uncollected): ~90 ms holding the GIL in a retrieval process,
    every 60 studies of a C-MOVE, stalling every thread. Collecting the young generations frees the dead
    associations' cycles as well; the interpreter's collector still runs the full collections when due.
    """

    _gc: list[int]

    def service_actions(self) -> None:
        """Collect the young generations every 60 loop turns (pynetdicom's count)."""
        if self._gc[0] == self._gc[1]:
            gc.collect(1)
            self._gc[0] = 0
            return
        self._gc[0] += 1


class AcceptorServer(_YoungCollections, NoDelayServer):
    """Blocking server: TCP_NODELAY, :class:`AcceptorRequestHandler` acceptors, negotiations cached."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", AcceptorRequestHandler)
        self.negotiation_cache = NegotiationCache()
        super().__init__(*args, **kwargs)


class ThreadedAcceptorServer(_YoungCollections, AdmittingServer, ThreadedNoDelayServer):
    """Threaded server: TCP_NODELAY, :class:`AcceptorRequestHandler` acceptors, and admission screening.

    The accept loop never handshakes or reads (:class:`~.admission.AdmittingServer`); negotiations are
    cached (:mod:`.negotiation`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", AcceptorRequestHandler)
        self.negotiation_cache = NegotiationCache()
        super().__init__(*args, **kwargs)


class AcceptorAE(NoDelayAE):
    """A :class:`~.sockets.NoDelayAE` whose servers run :class:`AcceptorAssociation` acceptors."""

    server_classes: dict[type, type] = {
        _transport.AssociationServer: AcceptorServer,
        _transport.ThreadedAssociationServer: ThreadedAcceptorServer,
    }
