"""One instance in memory: read, check, hold back or pseudonymise, encode (no file system, no network).

:class:`InstanceRewriter` serves the directory pipeline, the receiver's pseudonymising option (data sets as
received, see :meth:`InstanceRewriter.rewrite_dataset`) and the send option.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.rewrite import InstanceMapping, RewriteError, pseudonymise
from airflow_dicom.dimse.codec import encode_file_meta
from airflow_dicom.dimse.errors import MalformedDicomError
from airflow_dicom.dimse.send.files import check_structure

#: SOP classes that usually carry burned-in text: the secondary capture family (PS3.4 B.5).
BURNED_IN_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)


class HeldBackError(ValueError):
    """The instance is held back (it may carry burned-in text); the message says why, without identifiers."""

    held_back = True


def _check_complete(data: bytes, ds: Dataset) -> None:
    """Raise :class:`MalformedDicomError` when the data set after the file meta is truncated."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise MalformedDicomError("no DICM preamble and file meta group length")
    offset = 144 + int.from_bytes(data[140:144], "little")
    check_structure(memoryview(data)[offset:], str(ds.file_meta.TransferSyntaxUID))


class InstanceRewriter:
    """Pseudonymise encoded instances in memory.

    :param key: the key.
    :param options: profile options.
    :param keep_rows: remember each instance's mapping in :attr:`rows` (for the audit; off in long-running
        receivers, which would otherwise grow without bound).
    """

    def __init__(self, key: PseudonymKey, options: ProfileOptions, keep_rows: bool = True) -> None:
        self.key = key
        self.options = options
        self.keep_rows = keep_rows
        self.rows: list[InstanceMapping] = []
        self.last: InstanceMapping | None = None

    def held_reason(self, ds) -> str | None:  # noqa: ANN001 - a pydicom Dataset
        """Why ``ds`` is held back (burned-in text), or None.

        :param ds: the data set (before rewriting).
        """
        if self.options.include_burned_in:
            return None
        if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
            return "burned-in annotation"
        if str(ds.get("SOPClassUID", "")) in BURNED_IN_CLASSES:
            return "secondary capture (may carry burned-in text)"
        return None

    def rewrite_bytes(self, data: bytes, name: str = "instance") -> tuple[bytes | None, str | None]:
        """Pseudonymise one encoded instance (preamble + file meta + data set) in memory.

        :param data: the file's bytes.
        :param name: how errors name it (never an identifying value).
        :returns: (new bytes, None), or (None, why it is held back).
        :raises RewriteError: not DICOM, or the profile cannot be applied.
        """
        try:
            ds = dcmread(BytesIO(data), force=False)
            _check_complete(data, ds)
            if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
                raise RewriteError(f"{name}: no SOPInstanceUID/StudyInstanceUID, not a composite instance")
        except (
            InvalidDicomError,
            MalformedDicomError,
            EOFError,
            OSError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
        ) as exc:
            if isinstance(exc, RewriteError):
                raise
            raise RewriteError(f"{name}: not readable DICOM ({type(exc).__name__}: {exc})") from exc
        reason = self.held_reason(ds)
        if reason:
            return None, reason
        self.last = pseudonymise(ds, self.key, self.options)
        if self.keep_rows:
            self.rows.append(self.last)
        out = BytesIO()
        try:
            dcmwrite(out, ds, enforce_file_format=True)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise RewriteError(f"{name}: cannot write the pseudonymised instance ({exc})") from exc
        return out.getvalue(), None

    def rewrite_dataset(
        self, data: bytes, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str
    ) -> tuple[bytes, str]:
        """Pseudonymise a data set as received by C-STORE (no file meta), for the receiver.

        :param data: the encoded data set.
        :param sop_class_uid: Affected SOP Class UID.
        :param sop_instance_uid: Affected SOP Instance UID.
        :param transfer_syntax: the transfer syntax of ``data``.
        :returns: the pseudonymised data set (same transfer syntax) and its SOP Instance UID.
        :raises HeldBackError: the instance may carry burned-in text.
        :raises RewriteError: not a data set the profile can be applied to.
        """
        meta = encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, "")
        out, reason = self.rewrite_bytes(meta + bytes(data), name="received instance")
        if out is None:
            raise HeldBackError(f"held back: {reason}")
        offset = 144 + int.from_bytes(out[140:144], "little")
        return out[offset:], self.key.uid(sop_instance_uid)
