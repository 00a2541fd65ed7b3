"""Finding and reading the files to send: paths, globs and manifests; file meta; a structural check.

A sender needs, per file, only the SOP class, SOP instance and transfer syntax (from the file meta,
group 0002) and the offset where the data set starts: the bytes after it are sent as they are.
:func:`collect_files` expands paths, :func:`scan` reads each file's meta (:func:`read_meta`) and sorts out
what is not sendable; :func:`check_structure` walks a data set's element headers (skipping values) with the
codec's :class:`~airflow_dicom.dimse.codec.ElementWalker` to tell a complete file from a truncated one
before anything is sent. Reading the meta of 1,000 files with pydicom costs more than sending them.
"""

from __future__ import annotations

import glob
import os
import stat
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from airflow_dicom.dimse.codec import (
    MAGIC,
    PREAMBLE_LENGTH,
    UNDEFINED_LENGTH,
    ElementWalker,
    decode_text,
)
from airflow_dicom.dimse.errors import InvalidRequestError, MalformedDicomError, NotDicomError
from airflow_dicom.dimse.send.report import FAILED, SKIPPED, FileResult

#: Media Storage Directory Storage (DICOMDIR): an index of files, not an instance to store.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_META_READ = 4096
_META_START = PREAMBLE_LENGTH + len(MAGIC)


@dataclass(frozen=True)
class DicomFileInfo:
    """What a sender needs to know about one DICOM file.

    :param path: the file.
    :param sop_class_uid: (0002,0002) Media Storage SOP Class UID.
    :param sop_instance_uid: (0002,0003) Media Storage SOP Instance UID.
    :param transfer_syntax: (0002,0010) Transfer Syntax UID.
    :param dataset_offset: where the data set starts (the end of the file meta).
    :param size: the file size in bytes.
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset_offset: int
    size: int

    @property
    def dataset_size(self) -> int:
        """Bytes of the data set (what is sent)."""
        return self.size - self.dataset_offset


def read_meta(path: str | os.PathLike[str]) -> DicomFileInfo:
    """Read the file meta information of a DICOM Part 10 file.

    :param path: the file.
    :raises NotDicomError: no ``DICM`` magic after the preamble.
    :raises MalformedDicomError: the meta information is truncated or lacks a required element.
    :raises OSError: the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_META_READ)
        if len(head) < _META_START or head[PREAMBLE_LENGTH:_META_START] != MAGIC:
            raise NotDicomError("no DICM prefix after the 128-byte preamble: not a DICOM Part 10 file")
        values: dict[int, bytes] = {}
        offset = _META_START
        meta_end: int | None = None
        walker = ElementWalker(head, implicit=False)
        while True:
            if offset + 12 > len(head):  # room for the longest element header, if the file has it
                head += f.read(max(_META_READ, offset + 12 - len(head)))
                walker = ElementWalker(head, implicit=False)
            if offset + 8 > len(head) or head[offset : offset + 2] != b"\x02\x00":
                break  # end of file, or the first element after group 0002
            if meta_end is not None and offset >= meta_end:
                break
            tag, _, length, value = walker.header(offset)
            if length == UNDEFINED_LENGTH:
                raise MalformedDicomError(
                    f"file meta element (0002,{tag & 0xFFFF:04X}) has an undefined length"
                )
            if value + length > len(head):
                head += f.read(max(_META_READ, value + length - len(head)))
                walker = ElementWalker(head, implicit=False)
                if value + length > len(head):
                    raise MalformedDicomError("file meta information is truncated")
            values[tag & 0xFFFF] = head[value : value + length]
            if tag == 0x00020000 and length == 4:
                meta_end = value + 4 + int.from_bytes(values[0], "little")
            offset = value + length
    missing = [
        name
        for element, name in (
            (0x0002, "MediaStorageSOPClassUID"),
            (0x0003, "MediaStorageSOPInstanceUID"),
            (0x0010, "TransferSyntaxUID"),
        )
        if not values.get(element, b"").strip(b"\0 ")
    ]
    if missing:
        raise MalformedDicomError(f"file meta information lacks {', '.join(missing)}")
    if offset > size:
        raise MalformedDicomError("file meta information is truncated")
    return DicomFileInfo(
        path=path,
        sop_class_uid=decode_text(values[0x0002]),
        sop_instance_uid=decode_text(values[0x0003]),
        transfer_syntax=decode_text(values[0x0010]),
        dataset_offset=offset,
        size=size,
    )


def check_structure(data: bytes | memoryview, transfer_syntax: str) -> None:
    """Check that an encoded data set is complete, without decoding any value.

    Deflated data sets are inflated first (and must inflate completely). Other transfer syntaxes: every
    element header, sequence item and pixel data fragment must fit in ``data``.

    :param data: the encoded data set (the bytes following the file meta).
    :param transfer_syntax: its transfer syntax UID.
    :raises MalformedDicomError: the data set is truncated or malformed.
    """
    view = memoryview(data)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            view = memoryview(inflater.decompress(bytes(view)) + inflater.flush())
        except zlib.error as exc:
            raise MalformedDicomError(f"deflated data set cannot be inflated: {exc}") from None
        if not inflater.eof:
            raise MalformedDicomError("deflated data set is truncated")
    if len(view) == 0:
        raise MalformedDicomError("the file has no data set after its meta information")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    little = transfer_syntax != ExplicitVRBigEndian
    ElementWalker(view, implicit=implicit, little=little, deep=True).check()


def read_dataset_bytes(info: DicomFileInfo, *, check: bool = True) -> memoryview:
    """The encoded data set of a file (the bytes after its meta), structurally checked.

    :param info: from :func:`read_meta`.
    :param check: run :func:`check_structure` on it.
    :raises MalformedDicomError: the file changed since :func:`read_meta`, or is truncated/malformed.
    :raises OSError: the file cannot be read.
    """
    with open(info.path, "rb") as f:
        raw = f.read()
    if len(raw) != info.size:
        raise MalformedDicomError(f"the file changed while being sent ({info.size} -> {len(raw)} bytes)")
    data = memoryview(raw)[info.dataset_offset :]
    if check:
        check_structure(data, info.transfer_syntax)
    return data


def _has_magic(path: str) -> bool:
    return glob.has_magic(path)


def collect_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand files, directories (recursively) and glob patterns into a sorted, de-duplicated file list.

    :param paths: one path or several.
    :raises InvalidRequestError: a path does not exist or a pattern matches nothing.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    missing: list[str] = []
    for item in paths:
        text = os.fspath(item)
        if _has_magic(text) and not os.path.exists(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                missing.append(f"{text} (pattern matches nothing)")
            candidates = matches
        elif os.path.exists(text):
            candidates = [text]
        else:
            missing.append(text)
            continue
        for candidate in candidates:
            if os.path.isdir(candidate):
                for root, dirs, names in os.walk(candidate):
                    dirs.sort()
                    found.extend(os.path.join(root, n) for n in sorted(names))
            else:
                found.append(candidate)
    if missing:
        raise InvalidRequestError(f"nothing to send at: {', '.join(missing)}; check the paths")
    seen: set[tuple[int, int]] = set()
    unique: list[str] = []
    for path in found:
        try:
            status = os.stat(path)  # one stat: the same file by any path (links) and "is a file"
        except OSError:
            continue
        key = (status.st_dev, status.st_ino)
        if key not in seen and stat.S_ISREG(status.st_mode):
            seen.add(key)
            unique.append(path)
    return unique


def files_from_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """The file paths listed in a ``DicomArrivalSensor`` manifest.

    Expected shape: ``{"studies": {StudyInstanceUID: {"files": [path, ...], "instances": n,
    "bytes": b}, ...}, ...}`` (other top-level keys are ignored); a plain ``{"files": [...]}`` is
    accepted too.

    :param manifest: the manifest dict (e.g. the sensor's XCom).
    :raises InvalidRequestError: the manifest has neither shape.
    """
    if not isinstance(manifest, Mapping):
        raise InvalidRequestError(f"a manifest must be a dict, got {type(manifest).__name__}")
    files: list[str] = []
    if isinstance(manifest.get("files"), list):
        files.extend(map(str, manifest["files"]))
    studies = manifest.get("studies")
    if isinstance(studies, Mapping):
        for study_uid, study in studies.items():
            listed = study.get("files") if isinstance(study, Mapping) else None
            if not isinstance(listed, list):
                raise InvalidRequestError(f"manifest study {study_uid} has no 'files' list")
            files.extend(map(str, listed))
    elif "files" not in manifest:
        raise InvalidRequestError(
            "the manifest has no 'studies' mapping ({StudyInstanceUID: {'files': [...]}}) nor a 'files' list"
        )
    return files


def scan(paths: Sequence[str]) -> tuple[list[DicomFileInfo], list[FileResult]]:
    """Read the meta of every file: the sendable files, and the skipped or failed ones.

    :param paths: files (already expanded).
    """
    sendable: list[DicomFileInfo] = []
    rejected: list[FileResult] = []
    for path in paths:
        try:
            info = read_meta(path)
        except NotDicomError as exc:
            rejected.append(FileResult(path, SKIPPED, reason=str(exc)))
            continue
        except MalformedDicomError as exc:
            rejected.append(FileResult(path, FAILED, reason=f"invalid DICOM file: {exc}"))
            continue
        except OSError as exc:
            rejected.append(FileResult(path, FAILED, reason=f"cannot read the file: {exc.strerror or exc}"))
            continue
        if info.sop_class_uid == MEDIA_STORAGE_DIRECTORY:
            rejected.append(
                FileResult(
                    path, SKIPPED, sop_class_uid=info.sop_class_uid, reason="DICOMDIR index, not an instance"
                )
            )
            continue
        sendable.append(info)
    return sendable, rejected
