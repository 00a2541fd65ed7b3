"""The inputs of the file-taking operators: paths and a ``DicomArrivalSensor`` manifest, as one list."""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_dicom.dimse.send import files_from_manifest


def collect_paths(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    manifest: Mapping[str, Any] | str | None,
) -> list[str]:
    """``paths`` (one or a list) followed by the files of ``manifest``.

    :param paths: files, directories or globs.
    :param manifest: ``{"studies": {uid: {"files": [...]}}}`` (or ``{"files": [...]}``), or its rendering as
        JSON or a Python literal (a template renders a dict as text).
    """
    out: list[str] = []
    if paths:
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        out.extend(os.fspath(p) for p in items)
    if manifest is not None:
        if isinstance(manifest, str):  # rendered as text: the JSON (or Python repr) of the dict
            try:
                manifest = json.loads(manifest)
            except ValueError:
                manifest = ast.literal_eval(manifest)
        out.extend(files_from_manifest(manifest))
    return out
