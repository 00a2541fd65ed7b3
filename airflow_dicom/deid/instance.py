"""One instance in memory: read the file meta, hold back or pseudonymise, encode (no file system, no network).

:class:`InstanceRewriter` serves the directory pipeline, the receiver's pseudonymising option (data sets as
received, :meth:`InstanceRewriter.rewrite_dataset`) and the send option.
"""

from __future__ import annotations

import zlib

from airflow_dicom.deid.keys import PseudonymKey
from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.rewrite import (
    BURNED_IN,
    SOP_CLASS,
    SOP_UID,
    STUDY_UID,
    InstanceMapping,
    RewriteError,
    prescan,
    pseudonymise,
    text,
)
from airflow_dicom.dimse.codec import ElementWalker, encode_file_meta
from airflow_dicom.dimse.errors import MalformedDicomError

#: transfer syntaxes the rewrite treats apart (pydicom's ``uid`` constants; not imported: start-up cost)
DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
ImplicitVRLittleEndian = "1.2.840.10008.1.2"

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


def split_file(data: bytes) -> tuple[str, str, memoryview]:
    """(transfer syntax, media storage SOP class, data set) of a Part 10 file.

    :param data: the file's bytes.
    :raises RewriteError: no preamble/``DICM``, file meta truncated or incomplete.
    """
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise RewriteError("not a DICOM Part 10 file (no preamble, DICM and file meta group length)")
    offset = 144 + int.from_bytes(data[140:144], "little")
    if offset > len(data):
        raise RewriteError("file meta information is truncated")
    view = memoryview(data)
    try:
        meta = ElementWalker(view[132:offset], implicit=False).values({0x00020002, 0x00020010})
    except MalformedDicomError as exc:
        raise RewriteError(f"file meta information is malformed: {exc}") from exc
    ts = text(bytes(meta.get(0x00020010, b"")))
    if not ts:
        raise RewriteError("file meta information has no TransferSyntaxUID")
    return ts, text(bytes(meta.get(0x00020002, b""))), view[offset:]


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

    def held_reason(self, found: dict[int, bytes]) -> str | None:
        """Why an instance is held back (burned-in text), or None.

        :param found: its prescanned top-level values.
        """
        if self.options.include_burned_in:
            return None
        if text(found.get(BURNED_IN)).upper() == "YES":
            return "burned-in annotation"
        if text(found.get(SOP_CLASS)) in BURNED_IN_CLASSES:
            return "secondary capture (may carry burned-in text)"
        return None

    def _dataset(
        self, data: bytes | memoryview, transfer_syntax: str, name: str
    ) -> tuple[list[bytes | memoryview] | None, str | None]:
        deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
        if transfer_syntax == ExplicitVRBigEndian:
            raise RewriteError(f"{name}: explicit VR big endian (retired) is not supported; convert it first")
        try:
            if deflated:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                data = inflater.decompress(bytes(data)) + inflater.flush()
                if not inflater.eof:
                    raise MalformedDicomError("deflated data set is truncated")
            if len(data) == 0:
                raise MalformedDicomError("no data set")
            implicit = transfer_syntax == ImplicitVRLittleEndian
            found = prescan(data, implicit)
            if SOP_UID not in found or STUDY_UID not in found:
                raise RewriteError(f"{name}: no SOPInstanceUID/StudyInstanceUID, not a composite instance")
            reason = self.held_reason(found)
            if reason:
                return None, reason
            new, mapping = pseudonymise(self.key, self.options, data, implicit, found)
        except (MalformedDicomError, zlib.error, ValueError, UnicodeError) as exc:
            if isinstance(exc, RewriteError):
                raise
            raise RewriteError(f"{name}: not readable DICOM ({exc})") from exc
        self.last = mapping
        if self.keep_rows:
            self.rows.append(mapping)
        if deflated:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            new = [compressor.compress(b"".join(new)) + compressor.flush()]
        return new, None

    def rewrite_bytes(
        self, data: bytes, name: str = "instance"
    ) -> tuple[list[bytes | memoryview] | None, str | None]:
        """Pseudonymise one Part 10 file in memory.

        :param data: the file's bytes.
        :param name: how errors name it (never an identifying value).
        :returns: (the new file as chunks to write in order, None), or (None, why it is held back).
        :raises RewriteError: not DICOM, truncated, or the profile cannot be applied.
        """
        try:
            transfer_syntax, sop_class, dataset = split_file(data)
        except RewriteError as exc:
            raise RewriteError(f"{name}: {exc}") from exc
        new, reason = self._dataset(dataset, transfer_syntax, name)
        if new is None:
            return None, reason
        assert self.last is not None
        meta = encode_file_meta(
            self.last.sop_class_uid or sop_class, self.last.pseudo_sop_uid, transfer_syntax
        )
        return [meta, *new], None

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
        new, reason = self._dataset(data, transfer_syntax, "received instance")
        if new is None:
            raise HeldBackError(f"held back: {reason}")
        return b"".join(new), self.key.uid(sop_instance_uid)
