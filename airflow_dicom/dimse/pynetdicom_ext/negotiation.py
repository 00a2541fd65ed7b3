"""The acceptor's association negotiation, done once per distinct request and then remembered.

Measured on the project machine (2 cores) with Orthanc 1.10.1 opening the sub-association of a C-MOVE
(126 presentation contexts, 189 transfer syntaxes): pynetdicom 3.0 spent ~23 ms of CPU per association
before the first C-STORE — decoding the A-ASSOCIATE-RQ (~8 ms) and turning it into a primitive (~5 ms;
pydicom validates every UID against regular expressions), negotiating the contexts (~5 ms) and building and
encoding the A-ASSOCIATE-AC (~5 ms). That was most of the receiver's cost per study in a C-MOVE, where a
PACS opens one association per request. A peer asks the same thing every time, so each server keeps a
:class:`NegotiationCache`:

* the key is the request's bytes after the PDU header (protocol version, AE titles, every presentation
  context, user information) plus the acceptor's settings that shape the answer (maximum PDU,
  implementation UID and version name);
* the first such request is negotiated by pynetdicom, untouched (:class:`NegotiatingACSE` calls it), and
  what it decided is remembered: the requested contexts as decoded, the accepted and rejected contexts, the
  role selection replies and the encoded A-ASSOCIATE-AC;
* a request with the same bytes is decoded without its presentation-context items (their decoded objects
  are reused: read-only, shared by the associations), and accepted with the remembered contexts and the
  remembered A-ASSOCIATE-AC bytes. The accepted contexts are shared too: after negotiation pynetdicom only
  reads an acceptor's contexts (copying Orthanc's 126 for every association was ~9% of the receiver's time
  in a C-MOVE of the scale set).

Everything that decides per association still runs per association: the calling/called AE title checks and
the maximum number of associations (a rejection goes through pynetdicom's own negotiation), the events
(``EVT_ACCEPTED``, ``EVT_ESTABLISHED``...). Requests with user identity, SOP class (common) extended
negotiation or asynchronous operations items, and associations with a handler bound to ``EVT_PDU_RECV``,
``EVT_PDU_SENT`` or ``EVT_ACSE_SENT`` (they expect pynetdicom's own PDUs and primitives) always take
pynetdicom's path.
"""

from __future__ import annotations

import functools
import queue
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pynetdicom import _config
from pynetdicom import acse as _acse
from pynetdicom import events as _evt
from pynetdicom import pdu as _pdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)

from airflow_dicom.dimse.pynetdicom_ext.reactors import SelectDUL

#: offset of the first variable item of an A-ASSOCIATE-RQ/AC PDU (PS3.8 9.3.2)
_VARIABLE_ITEMS = 74
#: item type of a presentation context in an A-ASSOCIATE-RQ
_CONTEXT_ITEM = 0x20
#: user information sub-items that leave nothing to decide per association
_PLAIN_USER_ITEMS = (
    MaximumLengthNotification,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
_APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"


@dataclass(frozen=True)
class Negotiated:
    """What pynetdicom decided for one distinct A-ASSOCIATE-RQ.

    :param requested: the requested presentation contexts as pynetdicom decoded them (read-only, shared).
    :param request_without_contexts: the request PDU without its presentation-context items.
    :param accepted: accepted contexts by context ID (read-only, shared).
    :param rejected: rejected contexts.
    :param roles: SCP/SCU role selection replies.
    :param accept_pdu: the encoded A-ASSOCIATE-AC.
    """

    requested: tuple[Any, ...]
    request_without_contexts: bytes
    accepted: dict[int, Any]
    rejected: tuple[Any, ...]
    roles: tuple[Any, ...]
    accept_pdu: bytes

    @functools.cached_property
    def results(self) -> tuple[Any, ...]:
        """The accept primitive's context results: accepted ones by context ID, then the rejected ones."""
        return (*sorted(self.accepted.values(), key=lambda cx: cx.context_id), *self.rejected)


class NegotiationCache:
    """Negotiations of one server, by request (thread-safe, least recently used dropped first).

    :param size: distinct requests kept at most.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], Negotiated] = OrderedDict()

    @staticmethod
    def key(data: bytes, ae: Any) -> tuple[Any, ...]:
        """The cache key of an A-ASSOCIATE-RQ PDU received by an acceptor of ``ae``.

        :param data: the whole PDU.
        :param ae: the local application entity.
        """
        return (
            data[6:],
            ae.maximum_pdu_size,
            str(ae.implementation_class_uid),
            ae.implementation_version_name,
            bool(_config.UNRESTRICTED_STORAGE_SERVICE),
        )

    def get(self, key: tuple[Any, ...]) -> Negotiated | None:
        """The remembered negotiation of ``key``, or None.

        :param key: from :meth:`key`.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[Any, ...], entry: Negotiated) -> None:
        """Remember ``entry`` for ``key``.

        :param key: from :meth:`key`.
        :param entry: what was negotiated.
        """
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def without_context_items(data: bytes) -> bytes | None:
    """An A-ASSOCIATE-RQ PDU with its presentation-context items left out (None if it is malformed).

    :param data: the whole PDU.
    """
    items: list[bytes] = []
    offset = _VARIABLE_ITEMS
    while offset < len(data):
        if offset + 4 > len(data):
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        end = offset + 4 + length
        if end > len(data):
            return None
        if data[offset] != _CONTEXT_ITEM:
            items.append(data[offset:end])
        offset = end
    rest = b"".join(items)
    return data[:2] + struct.pack(">L", _VARIABLE_ITEMS - 6 + len(rest)) + data[6:_VARIABLE_ITEMS] + rest


class KnownContextsRQ(_pdu.A_ASSOCIATE_RQ):
    """An A-ASSOCIATE-RQ decoded without its presentation contexts, which are known already.

    :param contexts: the requested presentation contexts (decoded earlier from the same bytes).
    """

    def __init__(self, contexts: tuple[Any, ...]) -> None:
        super().__init__()
        self._known_contexts = contexts

    def to_primitive(self) -> A_ASSOCIATE:
        """pynetdicom's primitive, with the known presentation contexts."""
        primitive = super().to_primitive()
        primitive.presentation_context_definition_list = list(self._known_contexts)
        return primitive


def _observes_pdus(assoc: Any) -> bool:
    """True when a handler expects pynetdicom's own PDUs or the full A-ASSOCIATE (accept) primitive."""
    events = (_evt.EVT_PDU_RECV, _evt.EVT_PDU_SENT, _evt.EVT_ACSE_SENT)
    return any(assoc.get_handlers(event) for event in events)


class _WakingQueue(queue.Queue):
    """The DUL's queue to the association: every put also wakes the acceptor's reactor."""

    def __init__(self, dul: Any) -> None:
        super().__init__()
        self._dul = dul

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = getattr(self._dul.assoc, "dimse", None)
        waiting = getattr(dimse, "msg_queue", None)
        if waiting is not None:
            with waiting.not_empty:
                waiting.not_empty.notify_all()


class NegotiatingDUL(SelectDUL):
    """:class:`~.reactors.SelectDUL` for acceptors: decodes a known A-ASSOCIATE-RQ without its contexts and
    sends a known A-ASSOCIATE-AC as remembered (see the module docstring).

    Replaces ``DULServiceProvider._decode_pdu`` and ``_send`` (both fall back to pynetdicom's). Also, what
    the DUL hands to the association (an A-RELEASE or A-ABORT indication) wakes the acceptor's reactor,
    which waits on its DIMSE queue (:class:`~.acceptor.AcceptorAssociation`): a peer's release request was
    answered up to one idle wait late, on every association (one per study in a C-MOVE).
    """

    def __init__(self, assoc: Any, idle_wait: float) -> None:
        super().__init__(assoc, idle_wait)
        self._accept_pdu: bytes | None = None
        self.to_user_queue = _WakingQueue(self)

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        cache = getattr(self.assoc, "negotiation_cache", None)
        if bytestream[:1] != b"\x01" or cache is None or _observes_pdus(self.assoc):
            return super()._decode_pdu(bytestream)
        data = bytes(bytestream)
        key = cache.key(data, self.assoc.ae)
        self.assoc.negotiation_key = key
        self.assoc.negotiation_request = data
        known = cache.get(key)
        if known is None:
            return super()._decode_pdu(bytestream)
        _evt.trigger(self.assoc, _evt.EVT_DATA_RECV, {"data": data})
        pdu = KnownContextsRQ(known.requested)
        pdu.decode(known.request_without_contexts)
        self.assoc.negotiated = known
        return pdu, "Evt6"

    def send_known_accept(self, primitive: A_ASSOCIATE, data: bytes) -> None:
        """Send the A-ASSOCIATE-AC ``data`` for the (accept) ``primitive``, through the state machine.

        :param primitive: the primitive the state machine converts (keep it small: its PDU is not sent).
        :param data: the encoded A-ASSOCIATE-AC to send instead.
        """
        self._accept_pdu = data
        self.send_pdu(primitive)

    def _send(self, pdu: Any) -> None:
        if isinstance(pdu, _pdu.A_ASSOCIATE_AC) and self._accept_pdu is not None:
            data, self._accept_pdu = self._accept_pdu, None
            if self.socket is not None:
                self.socket.send(data)
                _evt.trigger(self.assoc, _evt.EVT_PDU_SENT, {"pdu": pdu})
                return
        super()._send(pdu)


class NegotiatingACSE(_acse.ACSE):
    """pynetdicom's ACSE provider for acceptors, accepting a known request as remembered.

    Replaces ``ACSE._negotiate_as_acceptor``: a request the server's :class:`NegotiationCache` knows (and that
    pynetdicom would not reject) is accepted with the remembered outcome; any other goes through pynetdicom's
    negotiation, and its outcome is remembered when the request qualifies (see the module docstring).
    """

    def _negotiate_as_acceptor(self) -> None:
        assoc = self.assoc
        request = self.requestor.primitive
        known: Negotiated | None = getattr(assoc, "negotiated", None)
        if known is not None and _plain(request) and not self._rejects(request):
            self._accept_known(request, known)
            return
        super()._negotiate_as_acceptor()
        if known is None and assoc.is_established and _plain(request):
            self._remember(request)

    def _rejects(self, request: A_ASSOCIATE) -> bool:
        """True if pynetdicom 3.0's acceptor rejects ``request`` (AE titles, association count)."""
        ae = self.assoc.ae
        allowed = [s.strip() for s in ae.require_calling_aet]
        if ae.require_calling_aet and request.calling_ae_title not in allowed:
            return True
        if ae.require_called_aet and request.called_ae_title != self.acceptor.ae_title.strip():
            return True
        acceptors = [a for a in ae.active_associations if a.is_acceptor]
        return len(acceptors) > ae.maximum_associations

    def _accept_known(self, request: A_ASSOCIATE, known: Negotiated) -> None:
        """pynetdicom's acceptance of a plain request, with the negotiation's outcome ``known``."""
        assoc = self.assoc
        self.requestor.ae_title = request.calling_ae_title
        self.acceptor._common_ext = {}  # as pynetdicom sets it for a request without such items
        assoc._accepted_cx = dict(known.accepted)  # shared contexts (see the module docstring)
        assoc._rejected_cx = list(known.rejected)
        for item in known.roles:
            self.acceptor.add_negotiation_item(item)
        _acse.LOGGER.info("Accepting Association")
        primitive = _accept_primitive(request)
        primitive.presentation_context_definition_results_list = list(known.results)
        primitive.user_information = self.acceptor.user_information
        self.acceptor.primitive = primitive
        self.dul.send_known_accept(_accept_primitive(request), known.accept_pdu)
        _evt.trigger(assoc, _evt.EVT_ACCEPTED, {})
        assoc.is_established = True
        _evt.trigger(assoc, _evt.EVT_ESTABLISHED, {})

    def _remember(self, request: A_ASSOCIATE) -> None:
        """Remember what pynetdicom decided for ``request`` in the server's cache."""
        assoc = self.assoc
        cache = getattr(assoc, "negotiation_cache", None)
        key = getattr(assoc, "negotiation_key", None)
        data = getattr(assoc, "negotiation_request", None)
        accept = self.acceptor.primitive
        if cache is None or key is None or data is None or accept is None:
            return
        reduced = without_context_items(data)
        if reduced is None:
            return
        roles = tuple(i for i in accept.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation))
        cache.put(
            key,
            Negotiated(
                requested=tuple(request.presentation_context_definition_list),
                request_without_contexts=reduced,
                accepted=dict(assoc._accepted_cx),
                rejected=tuple(assoc._rejected_cx),
                roles=roles,
                accept_pdu=_pdu.A_ASSOCIATE_AC(accept).encode(),
            ),
        )


def _plain(request: A_ASSOCIATE | None) -> bool:
    """True when ``request`` has no user information item that is decided per association."""
    if request is None:
        return False
    return all(isinstance(item, _PLAIN_USER_ITEMS) for item in request.user_information)


def _accept_primitive(request: A_ASSOCIATE) -> A_ASSOCIATE:
    """The A-ASSOCIATE (accept) primitive of pynetdicom's ``send_accept``, without contexts or user items."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = _APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    return primitive
