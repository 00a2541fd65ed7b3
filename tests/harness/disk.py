"""What a receiver wrote: SOPInstanceUIDs of the DICOM files under a data directory."""

from __future__ import annotations

from pathlib import Path

import pydicom

__all__ = ["sop_uids_on_disk"]


def sop_uids_on_disk(directory: Path) -> set[str]:
    """SOPInstanceUIDs of the ``*.dcm`` files under ``directory`` (hidden dirs such as .arrivals excluded).

    :param directory: a receiver's data directory.
    """
    found = set()
    for path in Path(directory).rglob("*.dcm"):
        if not any(part.startswith(".") for part in path.relative_to(directory).parts):
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return found
