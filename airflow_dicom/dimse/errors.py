"""Every exception raised by :mod:`airflow_dicom.dimse`, split into retryable and permanent failures.

The split follows ADIT's ``DicomError`` / ``RetriableDicomError``: a caller decides whether to try again
from the error alone, and *how* (attempts, waits) from :mod:`airflow_dicom.dimse.retry`, which is kept
apart so that policy changes never touch the errors.

* :class:`DicomError` is the base of everything (``except DicomError`` catches every failure).
* :class:`RetryableDicomError`: the same request may succeed later (the node was unreachable, aborted the
  association, lost a response, was out of resources).
* :class:`PermanentDicomError`: trying again changes nothing until someone changes the request, the
  configuration or the data (invalid settings, refused contexts, broken files, unsafe identifiers).
* Two errors depend on what the node said rather than on their class: :class:`AssociationRejectedError`
  (A-ASSOCIATE-RJ result "transient" or "permanent") and :class:`DimseFailureError` (out-of-resources
  statuses and missing responses are retryable). Read :attr:`DicomError.retryable`, not the class, when
  deciding.

Every message names the node (and UID) concerned and says what the user can do about it. Messages never
contain patient identifiers, only node addresses, AE titles, UIDs and status codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_dicom.dimse.status import describe_status

if TYPE_CHECKING:
    from airflow_dicom.dimse.node import DicomNode
    from airflow_dicom.dimse.send.report import SendReport


class DicomError(Exception):
    """Base class of every error raised by :mod:`airflow_dicom.dimse`."""

    #: True when the same request may succeed later (see :mod:`airflow_dicom.dimse.retry`).
    retryable: bool = False


class RetryableDicomError(DicomError):
    """A failure worth retrying later: the node was busy, unreachable or dropped the association."""

    retryable = True


class PermanentDicomError(DicomError):
    """A failure that repeats until the request, the configuration or the data changes."""

    retryable = False


# ------------------------------------------------------------------------------ before any network traffic


class InvalidNodeError(PermanentDicomError, ValueError):
    """A DICOM node setting is invalid (raised before any network activity).

    :param field: the name of the offending setting, e.g. ``called_ae_title``.
    :param message: what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid DICOM node setting {field!r}: {message}")


class InvalidRequestError(PermanentDicomError, ValueError):
    """A request (query keys, UIDs, levels) is invalid; raised before any association is opened."""


# ------------------------------------------------------------------------------ associations


class NodeUnreachableError(RetryableDicomError):
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


class TlsError(PermanentDicomError):
    """TLS with the node failed: unusable settings or a refused handshake (certificate, CA, hostname...).

    :param node: the node.
    :param reason: what went wrong and what to do, in words (never key material).
    """

    def __init__(self, node: DicomNode, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"DICOM TLS with node {node.describe()} failed: {reason}.")


#: what to do about a rejection, by pynetdicom's reason text (``A_ASSOCIATE.reason_str``, lower case).
REJECT_ADVICE = {
    "called ae title not recognised": "check the node's called AE title",
    "calling ae title not recognised": (
        "ask the PACS administrators to register our calling AE title, or set the one they registered"
    ),
    "temporary congestion": "the node is busy; retry later or lower the number of parallel associations",
    "local limit exceeded": "the node has too many associations open; lower the parallelism and retry",
}


class AssociationRejectedError(DicomError):
    """The node answered the association request with A-ASSOCIATE-RJ.

    Retryable when the rejection is transient (result 2), permanent otherwise.

    :param node: the node that rejected us.
    :param result: 1 (permanent) or 2 (transient).
    :param source: 1, 2 or 3 (PS3.8 table 9-21).
    :param reason: the reason/diagnostic code.
    :param source_text: the source in words (pynetdicom's ``A_ASSOCIATE.source_str``).
    :param reason_text: the reason in words (pynetdicom's ``A_ASSOCIATE.reason_str``).
    """

    def __init__(
        self,
        node: DicomNode,
        result: int,
        source: int,
        reason: int,
        source_text: str = "",
        reason_text: str = "",
    ) -> None:
        self.node = node
        self.result = result
        self.source = source
        self.reason = reason
        self.result_text = "rejected transiently" if result == 2 else "rejected permanently"
        self.source_text = source_text or f"source {source}"
        text = reason_text or f"reason {reason}"
        self.reason_text = text[:1].lower() + text[1:]
        advice = REJECT_ADVICE.get(
            self.reason_text.lower(), "check the node's AE titles and its configuration"
        )
        super().__init__(
            f"association with {node.describe()} {self.result_text} by the {self.source_text}: "
            f"{self.reason_text} ({advice})"
        )

    @property
    def transient(self) -> bool:
        """True when the rejection is transient (worth retrying later)."""
        return self.result == 2

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Same as :attr:`transient`."""
        return self.transient


class AssociationAbortedError(RetryableDicomError):
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


class ReceiverStartError(RetryableDicomError):
    """Our embedded receiver could not start listening (the port is taken, the address is not ours...).

    :param what: the receiver, e.g. ``OURS (embedded receiver on port 11113)``.
    :param reason: why, from the operating system.
    :param advice: what the user can do.
    """

    def __init__(self, what: str, reason: str, advice: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"the receiver {what} cannot start: {reason}; {advice}")


class ReceiverGoneError(RetryableDicomError):
    """Our embedded receiver stopped serving in the middle of a retrieval (its process ended): nothing more
    can arrive, so no further request is sent; the run can be repeated (what arrived is kept)."""


class NoAcceptedContextError(PermanentDicomError):
    """The node accepted the association but none of the presentation contexts we need.

    :param node: the node.
    :param what: the service (and SOP class / syntax) that was refused.
    """

    def __init__(self, node: DicomNode, what: str) -> None:
        self.node = node
        super().__init__(
            f"{node.describe()} accepted the association but refused the presentation context for {what}: "
            "the node does not offer this service (or this SOP class / transfer syntax) to us."
        )


# ------------------------------------------------------------------------------ DIMSE services


class DimseFailureError(DicomError):
    """A DIMSE service returned a failure status (or no status at all).

    Retryable when no response arrived or the node was out of resources (0xA7xx), permanent otherwise.

    :param node: the node that answered.
    :param service: e.g. ``C-ECHO``, ``C-FIND``.
    :param status: the status code, or ``None`` when no response arrived in time.
    :param detail: extra context (UID, interval...).
    """

    def __init__(self, node: DicomNode, service: str, status: int | None, detail: str = "") -> None:
        self.node = node
        self.service = service
        self.status = status
        extra = f" ({detail})" if detail else ""
        if status is None:
            text = (
                f"{service} to {node.describe()} got no response{extra}: the DIMSE timeout expired or the "
                "association was aborted"
            )
        elif status == 0x0000:  # the service succeeded, its answer is the problem: no "failed ... Success"
            text = f"{service} to {node.describe()}: {detail or 'an unusable answer'}"
        else:
            text = f"{service} to {node.describe()} failed{extra}: {describe_status(service, status)}"
        super().__init__(text)

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """True without a response, or for an out-of-resources status (0xA700-0xA7FF)."""
        return self.status is None or 0xA700 <= self.status <= 0xA7FF


class FindTruncatedError(PermanentDicomError):
    """The node truncates a query that cannot be split any further: a complete result is impossible.

    :param node: the node.
    :param level: the level of the truncated query.
    :param where: the interval (or study/series UID) of the truncated query.
    :param reason: how the truncation showed (status or limit).
    :param advice: what the user can do.
    """

    def __init__(self, node: DicomNode, level: str, where: str, reason: str, advice: str) -> None:
        self.node = node
        self.level = level
        self.where = where
        super().__init__(
            f"C-FIND at {level} level to {node.describe()} is truncated for {where} ({reason}) and cannot be "
            f"split further, so the result would be incomplete; nothing partial is returned. {advice}"
        )


class LostResponseError(RetryableDicomError):
    """A request's response never came (timeout, aborted association, or the socket failed while writing).

    The association is unusable afterwards; the request may be sent again on a fresh one.
    """


class SendFailedError(PermanentDicomError):
    """More files failed to be stored than the caller allows.

    :param report: the complete account of the send.
    :param max_failed: the number of failed files that was allowed.
    """

    def __init__(self, report: SendReport, max_failed: int) -> None:
        self.report = report
        self.max_failed = max_failed
        failed = report.failed
        shown = "; ".join(f"{r.path}: {r.reason}" for r in failed[:20])
        more = f"; and {len(failed) - 20} more" if len(failed) > 20 else ""
        super().__init__(
            f"C-STORE to {report.node.describe()}: {len(failed)} of {report.files} files failed "
            f"(allowed: {max_failed}): {shown}{more}"
        )


# ------------------------------------------------------------------------------ files and received data


class NotDicomError(PermanentDicomError):
    """The file is not a DICOM Part 10 file (no ``DICM`` prefix): a sender skips it, it does not fail."""


class MalformedDicomError(PermanentDicomError):
    """Encoded DICOM (file meta, data set, command set) is broken or truncated."""


class UnreadableDatasetError(PermanentDicomError, ValueError):
    """Received bytes are not a dataset the identifiers can be read from (the receiver quarantines them)."""


class UnsafeIdentifierError(PermanentDicomError, ValueError):
    """An identifier cannot be used in a file path (the receiver refuses the instance).

    :param field: the attribute keyword (``SOPInstanceUID``...).
    :param reason: why it was refused (never the value itself if it may be PHI).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason
