"""The one place where associations are opened and closed.

Every DICOM service in this package gets its association from :func:`open_association`, which always
sends the node's called AE title, uses the requestor of :mod:`airflow_dicom.dimse.pynetdicom_ext`
(TCP_NODELAY, a ``select()``-based DUL, a reactor that never takes a response), applies the node's
timeouts and maximum PDU, and turns every way an association can fail into a typed error.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NoAcceptedContextError,
    NodeUnreachableError,
    TlsError,
)
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.pynetdicom_ext import (
    connect_error,
    make_requestor_ae,
    recv_error,
    tls_handshake_began,
)
from airflow_dicom.dimse.tls import TlsConfigError, explain_client_failure, node_client_context

log = logging.getLogger(__name__)

#: PS3.8: at most 128 presentation contexts can be proposed in one association request.
MAX_CONTEXTS = 128

ContextSpec = str | PresentationContext | tuple[str, Sequence[str]]


def _contexts(specs: Sequence[ContextSpec]) -> list[PresentationContext]:
    contexts: list[PresentationContext] = []
    for spec in specs:
        if isinstance(spec, PresentationContext):
            contexts.append(spec)
        elif isinstance(spec, tuple):
            contexts.append(build_context(spec[0], list(spec[1])))
        else:
            contexts.append(build_context(spec))
    if not contexts:
        raise ValueError("at least one presentation context is required")
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts requested; an association allows {MAX_CONTEXTS}"
        )
    return contexts


def _tls_args(node: DicomNode) -> tuple[ssl.SSLContext, str] | None:
    if not node.tls:
        return None
    try:
        context = node_client_context(node)
    except TlsConfigError as exc:
        raise TlsError(node, str(exc)) from None
    return context, node.host


def _tls_failure(node: DicomNode, error: BaseException) -> TlsError:
    reason = explain_client_failure(
        error, host=node.host, ca_file=node.tls_ca_file, has_cert=bool(node.tls_cert_file)
    )
    return TlsError(node, reason)


def _unreachable_reason(error: OSError, node: DicomNode) -> str:
    if isinstance(error, TimeoutError) or "timed out" in str(error):
        return f"no answer within {node.acse_timeout:g} s (connection timed out)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    return error.strerror or str(error)


@contextmanager
def open_association(
    node: DicomNode,
    contexts: Sequence[ContextSpec],
    *,
    purpose: str,
    evt_handlers: list[Any] | None = None,
    ext_neg: list[Any] | None = None,
) -> Iterator[Association]:
    """Open an association with ``node`` proposing ``contexts``; release it on exit.

    :param node: the remote node.
    :param contexts: abstract syntax UIDs (all default transfer syntaxes), ``(abstract, [transfer...])``
        pairs or ready :class:`~pynetdicom.presentation.PresentationContext` objects (at most 128).
    :param purpose: what the association is for (``C-ECHO``, ``C-FIND``...), used in messages.
    :param evt_handlers: pynetdicom ``(event, handler)`` bindings, e.g. a C-STORE handler for C-GET.
    :param ext_neg: extended negotiation items (e.g. SCP/SCU role selection for C-GET).
    :raises NodeUnreachableError: the TCP connection failed.
    :raises AssociationRejectedError: the node sent A-ASSOCIATE-RJ.
    :raises AssociationAbortedError: the node aborted during negotiation or did not answer in time.
    :raises NoAcceptedContextError: the node accepted but refused every proposed context.
    :raises TlsError: the TLS settings are unusable or the TLS handshake failed (the reason says why).
    """
    ae = make_requestor_ae(node.calling_ae_title)
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.connection_timeout = node.acse_timeout
    ae.maximum_pdu_size = node.max_pdu
    started = time.monotonic()
    assoc = ae.associate(
        node.host,
        node.port,
        contexts=_contexts(contexts),
        ae_title=node.called_ae_title,
        max_pdu=node.max_pdu,
        ext_neg=ext_neg,
        tls_args=_tls_args(node),
        evt_handlers=evt_handlers,
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            raise AssociationRejectedError(
                node,
                int(rj.result or 0),
                int(rj.result_source or 0),
                int(rj.diagnostic or 0),
                source_text=rj.source_str,
                reason_text=rj.reason_str,
            )
        error = connect_error(assoc)
        if node.tls and isinstance(error, ssl.SSLError | ConnectionResetError | BrokenPipeError):
            raise _tls_failure(node, error)
        if node.tls and isinstance(error, TimeoutError) and tls_handshake_began(assoc):
            raise NodeUnreachableError(
                node,
                "the TCP connection was made but the TLS handshake got no answer within "
                f"{node.acse_timeout:g} s (the node may be overloaded, or its port may not speak TLS)",
            )
        if error is not None:
            raise NodeUnreachableError(node, _unreachable_reason(error, node))
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            # pynetdicom aborts (A-ABORT) an accepted association in which every context was refused
            raise NoAcceptedContextError(node, purpose)
        during = f"association negotiation for {purpose}"
        if not node.tls and isinstance(recv_error(assoc), ConnectionResetError):
            # a TLS port resets a plain A-ASSOCIATE-RQ: say so, it is the usual cause
            during += " (the node reset the connection: if that port expects DICOM over TLS, turn TLS on)"
        raise AssociationAbortedError(node, during)
    log.debug(
        "association with %s established in %.3f s for %s",
        node.describe(),
        time.monotonic() - started,
        purpose,
    )
    try:
        if not assoc.accepted_contexts:
            raise NoAcceptedContextError(node, purpose)
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        if assoc.is_alive() and not assoc.is_released:
            assoc.abort()


def accepted_context(assoc: Association, abstract_syntax: str) -> PresentationContext | None:
    """The first accepted presentation context for ``abstract_syntax`` in ``assoc`` (``None`` if refused).

    :param assoc: an established association.
    :param abstract_syntax: a SOP class UID.
    """
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == abstract_syntax:
            return context
    return None
