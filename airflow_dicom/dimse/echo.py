"""C-ECHO (Verification SOP Class)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pynetdicom.sop_class import Verification

from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.errors import AssociationAbortedError, DimseFailureError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.status import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EchoResult:
    """The outcome of a successful C-ECHO.

    :param node: the node that answered.
    :param round_trip: seconds between sending the C-ECHO request and receiving its response.
    :param total: seconds including association set-up and release.
    """

    node: DicomNode
    round_trip: float
    total: float


def echo(node: DicomNode) -> EchoResult:
    """Verify DICOM connectivity with ``node`` (C-ECHO).

    :param node: the node to verify.
    :raises DicomError: a typed error saying what failed (unreachable, rejected, aborted, failure status).
    """
    started = time.monotonic()
    with open_association(node, [Verification], purpose="C-ECHO") as assoc:
        sent = time.monotonic()
        rsp = assoc.send_c_echo()
        round_trip = time.monotonic() - sent
        status = getattr(rsp, "Status", None)
        if status is None:
            if assoc.is_aborted:
                raise AssociationAbortedError(node, "C-ECHO")
            raise DimseFailureError(node, "C-ECHO", None)
        if status != Status.SUCCESS:
            raise DimseFailureError(node, "C-ECHO", int(status))
    total = time.monotonic() - started
    log.info(
        "C-ECHO %s ok: round trip %.1f ms, total %.1f ms", node.describe(), round_trip * 1e3, total * 1e3
    )
    return EchoResult(node=node, round_trip=round_trip, total=total)
