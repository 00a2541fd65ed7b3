"""Typed errors raised by the DICOM networking layer.

Every error names the node it concerns and says what the user can do about it. Messages never contain
patient identifiers, only node addresses, AE titles, UIDs and status codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_dicom.dimse.node import DicomNode


class DicomError(Exception):
    """Base class of every error raised by :mod:`airflow_dicom.dimse`."""


class InvalidNodeError(DicomError, ValueError):
    """A DICOM node setting is invalid (raised before any network activity).

    :param field: the name of the offending setting, e.g. ``called_ae_title``.
    :param message: what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid DICOM node setting {field!r}: {message}")


class InvalidRequestError(DicomError, ValueError):
    """A request (query keys, UIDs, levels) is invalid; raised before any association is opened."""


class NodeUnreachableError(DicomError):
    """The TCP connection to the node could not be made.

    :param node: the node that could not be reached.
    :param reason: the socket-level reason (connection refused, timed out...).
    """

    def __init__(self, node: DicomNode, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(
            f"DICOM node {node.describe()} is unreachable: {reason}. Check that the node is running, "
            f"that host {node.host!r} and port {node.port} are right and that no firewall blocks the port."
        )


#: PS3.8 9.3.4: A-ASSOCIATE-RJ result, source and reason, as words.
REJECT_RESULT = {1: "rejected permanently", 2: "rejected transiently"}
REJECT_SOURCE = {
    1: "DICOM UL service-user",
    2: "DICOM UL service-provider (ACSE related function)",
    3: "DICOM UL service-provider (presentation related function)",
}
REJECT_REASON = {
    1: {
        1: "no reason given",
        2: "application context name not supported",
        3: "calling AE title not recognised",
        4: "reserved",
        5: "reserved",
        6: "reserved",
        7: "called AE title not recognised",
        8: "reserved",
        9: "reserved",
        10: "reserved",
    },
    2: {1: "no reason given", 2: "protocol version not supported"},
    3: {0: "reserved", 1: "temporary congestion", 2: "local limit exceeded"},
}

REJECT_ADVICE = {
    "called AE title not recognised": "check the node's called AE title",
    "calling AE title not recognised": (
        "ask the PACS administrators to register our calling AE title, or set the one they registered"
    ),
    "temporary congestion": "the node is busy; retry later or lower the number of parallel associations",
    "local limit exceeded": "the node has too many associations open; lower the parallelism and retry",
}


class AssociationRejectedError(DicomError):
    """The node answered the association request with A-ASSOCIATE-RJ.

    :param node: the node that rejected us.
    :param result: 1 (permanent) or 2 (transient).
    :param source: 1, 2 or 3 (PS3.8 table 9-21).
    :param reason: the reason/diagnostic code.
    """

    def __init__(self, node: DicomNode, result: int, source: int, reason: int) -> None:
        self.node = node
        self.result = result
        self.source = source
        self.reason = reason
        self.result_text = REJECT_RESULT.get(result, f"result {result}")
        self.source_text = REJECT_SOURCE.get(source, f"source {source}")
        self.reason_text = REJECT_REASON.get(source, {}).get(reason, f"reason {reason}")
        advice = REJECT_ADVICE.get(self.reason_text, "check the node's AE titles and its configuration")
        super().__init__(
            f"association with {node.describe()} {self.result_text} by the {self.source_text}: "
            f"{self.reason_text} ({advice})"
        )

    @property
    def transient(self) -> bool:
        """True when the rejection is transient (worth retrying later)."""
        return self.result == 2


class AssociationAbortedError(DicomError):
    """The association was aborted (A-ABORT or A-P-ABORT) or dropped by the peer or a timeout.

    :param node: the node of the association.
    :param during: what we were doing when it was aborted.
    """

    def __init__(self, node: DicomNode, during: str) -> None:
        self.node = node
        self.during = during
        super().__init__(
            f"association with {node.describe()} was aborted during {during}: the node closed the connection "
            "or a timeout (ACSE/DIMSE/network) expired. Check the node's logs and the timeouts."
        )


class NoAcceptedContextError(DicomError):
    """The node accepted the association but none of the presentation contexts we need."""

    def __init__(self, node: DicomNode, what: str) -> None:
        self.node = node
        super().__init__(
            f"{node.describe()} accepted the association but refused the presentation context for {what}: "
            "the node does not offer this service (or this SOP class / transfer syntax) to us."
        )


class DimseFailureError(DicomError):
    """A DIMSE service returned a failure status (or no status at all).

    :param node: the node that answered.
    :param service: e.g. ``C-ECHO``, ``C-FIND``.
    :param status: the status code, or ``None`` when no response arrived in time.
    :param detail: extra context (UID, interval...).
    """

    def __init__(self, node: DicomNode, service: str, status: int | None, detail: str = "") -> None:
        from airflow_dicom.dimse.status import describe_status

        self.node = node
        self.service = service
        self.status = status
        extra = f" ({detail})" if detail else ""
        if status is None:
            text = (
                f"{service} to {node.describe()} got no response{extra}: the DIMSE timeout expired or the "
                "association was aborted"
            )
        else:
            text = f"{service} to {node.describe()} failed{extra}: {describe_status(service, status)}"
        super().__init__(text)
