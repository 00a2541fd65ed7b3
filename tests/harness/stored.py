"""What a receiver stored, read back from its data directory (shared by the receiver tests)."""

from __future__ import annotations

from pathlib import Path

import pydicom


def data_set_bytes(path: Path) -> bytes:
    """The bytes after a Part 10 file's preamble, prefix and File Meta group (the data set as sent).

    :param path: a DICOM Part 10 file.
    """
    raw = path.read_bytes()
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


def stored_data_sets(data_dir: Path) -> dict[str, bytes]:
    """SOPInstanceUID -> data set bytes of every file a receiver stored (hidden directories skipped).

    :param data_dir: the receiver's data directory.
    """
    out = {}
    for path in data_dir.rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(data_dir).parts):
            out[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = data_set_bytes(path)
    return out
