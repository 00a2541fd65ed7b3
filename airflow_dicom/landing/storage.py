"""Where landed files go: local paths, fsspec URLs and Airflow ``ObjectStoragePath`` (no Airflow import)."""

from __future__ import annotations

import os
from typing import Any

import pyarrow.fs as pafs


def resolve_target(path: Any, filesystem: Any = None) -> tuple[pafs.FileSystem, str]:
    """Turn a destination into a pyarrow filesystem and a path on it.

    :param path: a local path (``str`` / ``os.PathLike``), a URL (``s3://bucket/prefix``,
        ``memory://x``, ``file:///data``: anything fsspec knows) or an object with ``fs`` and ``path``
        attributes such as Airflow's ``ObjectStoragePath``.
    :param filesystem: an explicit pyarrow or fsspec filesystem for ``path`` (optional).
    """
    if filesystem is not None:
        return _as_arrow(filesystem), str(path)
    fs = getattr(path, "fs", None)
    inner = getattr(path, "path", None)
    if fs is not None and isinstance(inner, str):  # ObjectStoragePath / universal_pathlib
        protocol = getattr(fs, "protocol", "")
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        if "file" in protocols or "local" in protocols:
            return pafs.LocalFileSystem(), os.path.abspath(inner)
        return _as_arrow(fs), inner
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if text.startswith("file://"):
        return pafs.LocalFileSystem(), os.path.abspath(text[len("file://") :])
    if "://" in text:
        import fsspec  # only for URLs (it comes with Airflow; the CLI may run without it)

        fs, inner = fsspec.core.url_to_fs(text)
        return _as_arrow(fs), inner
    return pafs.LocalFileSystem(), os.path.abspath(text)


def _as_arrow(filesystem: Any) -> pafs.FileSystem:
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))


def display_path(path: Any) -> str:
    """The destination as text for summaries and messages (URLs keep their scheme).

    :param path: what was given to :func:`resolve_target`.
    """
    if hasattr(path, "fs") and hasattr(path, "path"):
        return str(path)
    return os.fspath(path) if isinstance(path, os.PathLike) else str(path)
