"""The account of a send: one :class:`FileResult` per file found, gathered in a :class:`SendReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.uid import UID

from airflow_dicom.dimse.errors import SendFailedError
from airflow_dicom.dimse.node import DicomNode

SENT = "sent"
WARNING = "warning"
FAILED = "failed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class FileResult:
    """What happened to one file.

    :param path: the file.
    :param outcome: ``sent``, ``warning``, ``failed`` or ``skipped``.
    :param sop_instance_uid: from the file meta (None if unreadable).
    :param sop_class_uid: from the file meta.
    :param transfer_syntax: the file's transfer syntax.
    :param bytes: data set bytes sent (0 if not sent).
    :param status: the C-STORE response status, None when no response was received.
    :param reason: the status meaning, or why the file was not sent/skipped.
    :param attempts: C-STORE requests made for the file (more than 1 after a lost response).
    :param transcoded_to: the transfer syntax it was converted to, if it was.
    """

    path: str
    outcome: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None
    bytes: int = 0
    status: int | None = None
    reason: str = ""
    attempts: int = 0
    transcoded_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def transcoding(result: FileResult) -> str:
    """How a file was converted, in words: ``"RLE Lossless -> Explicit VR Little Endian"``.

    :param result: a file's result (``transcoded_to`` set).
    """
    return f"{UID(result.transfer_syntax or '').name} -> {UID(result.transcoded_to or '').name}"


@dataclass
class SendReport:
    """The account of a send: one :class:`FileResult` per file found.

    :param node: the destination.
    :param results: per-file results in the order the files were found.
    :param seconds: wall-clock duration of the whole send.
    :param associations: associations opened.
    """

    node: DicomNode
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    associations: int = 0

    def _with(self, outcome: str) -> list[FileResult]:
        return [r for r in self.results if r.outcome == outcome]

    @property
    def files(self) -> int:
        """Files examined (skipped ones included)."""
        return len(self.results)

    @property
    def sent(self) -> list[FileResult]:
        """Files stored with status Success."""
        return self._with(SENT)

    @property
    def warnings(self) -> list[FileResult]:
        """Files stored with a warning status (e.g. 0xB000 coercion of data elements)."""
        return self._with(WARNING)

    @property
    def failed(self) -> list[FileResult]:
        """Files not stored: failure status, refused context, unreadable, no response."""
        return self._with(FAILED)

    @property
    def skipped(self) -> list[FileResult]:
        """Files that are not DICOM Part 10 files (or DICOMDIR indexes)."""
        return self._with(SKIPPED)

    @property
    def bytes_sent(self) -> int:
        """Data set bytes of the files stored (success or warning)."""
        return sum(r.bytes for r in self.results if r.outcome in (SENT, WARNING))

    @property
    def retried(self) -> list[FileResult]:
        """Files that needed more than one C-STORE request (lost response, aborted association)."""
        return [r for r in self.results if r.attempts > 1]

    @property
    def transcoded(self) -> list[FileResult]:
        """Files stored after conversion to another transfer syntax (``transcode=True``)."""
        return [r for r in self.results if r.transcoded_to and r.outcome in (SENT, WARNING)]

    def summary(self, max_listed: int = 100) -> dict[str, Any]:
        """A JSON-serialisable summary (the operator's XCom): counts, bytes, seconds, failures listed.

        :param max_listed: at most this many failed/skipped/retried files are listed by name.
        """

        def listed(results: list[FileResult]) -> list[dict[str, Any]]:
            return [
                {
                    "path": r.path,
                    "sop_instance_uid": r.sop_instance_uid,
                    "status": r.status,
                    "reason": r.reason,
                }
                for r in results[:max_listed]
            ]

        return {
            "node": self.node.describe(),
            "files": self.files,
            "bytes": self.bytes_sent,
            "sent": len(self.sent),
            "warning": len(self.warnings),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "retried": len(self.retried),
            "associations": self.associations,
            "seconds": round(self.seconds, 3),
            "failures": listed(self.failed),
            "skipped_files": listed(self.skipped),
            "warnings": listed(self.warnings),
            "transcoded": len(self.transcoded),
            "transcoded_files": [
                {
                    "path": r.path,
                    "sop_instance_uid": r.sop_instance_uid,
                    "from": r.transfer_syntax,
                    "to": r.transcoded_to,
                }
                for r in self.transcoded[:max_listed]
            ],
        }

    def raise_for_failures(self, max_failed: int = 0) -> None:
        """Raise :class:`SendFailedError` when more than ``max_failed`` files failed.

        :param max_failed: failed files tolerated (0: any failure raises).
        """
        if len(self.failed) > max_failed:
            raise SendFailedError(self, max_failed)
