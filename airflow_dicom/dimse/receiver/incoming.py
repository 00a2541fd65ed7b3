"""Where files are written before they are renamed into place: one locked directory per writing process."""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
from pathlib import Path

from airflow_dicom.dimse.arrivals import writer_name

log = logging.getLogger(__name__)


class IncomingDir:
    """This process's directory for files being written: ``<data_dir>/.incoming/<host>-<pid>-<token>/``.

    Files are written there as ``*.tmp`` and renamed into the layout (same filesystem, so the rename is
    atomic): a reader of the layout never sees a partial file. The directory holds an exclusive
    ``flock`` on its ``lock`` file while the writer lives; a new writer removes the directories whose
    lock it can take, i.e. the leftovers of receivers that were killed (SIGKILL, power loss), without
    touching those of other live receivers sharing the data directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        token = writer_name()
        # made under a hidden name and renamed once locked, so no other writer can take it for stale
        starting = root / f".{token}.new"
        starting.mkdir()
        self._lock_fd: int | None = os.open(starting / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = root / token
        os.rename(starting, self.path)
        self._prefix = f"{self.path}{os.sep}"
        self._serial = itertools.count()  # the directory is this process's alone: a counter is unique

    def tmp_path(self, name: str) -> str:
        """A fresh temporary file name for ``name`` (ends with ``.tmp``; no system call).

        :param name: the final file name.
        """
        return f"{self._prefix}{name}.{next(self._serial)}.tmp"

    def ensure(self) -> None:
        """Make the directory again if it was removed under us (cleanup by hand)."""
        self.path.mkdir(parents=True, exist_ok=True)

    def _remove_stale(self) -> None:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            lock_path = Path(entry.path) / "lock"
            try:
                fd = os.open(lock_path, os.O_WRONLY)
            except FileNotFoundError:
                fd = None  # not created yet by a starting writer, or half-removed: leave it
            except OSError:
                continue
            if fd is None:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live writer holds it
            try:
                leftovers = [p for p in Path(entry.path).iterdir() if p.name != "lock"]
                for leftover in leftovers:
                    leftover.unlink()
                lock_path.unlink()
                os.rmdir(entry.path)
                if leftovers:
                    log.info("removed %d partial file(s) left by a stopped receiver", len(leftovers))
            except OSError as exc:
                log.warning("could not remove a stale incoming directory %s: %s", entry.path, exc)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Release the lock and remove the (empty) directory."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        try:
            for leftover in self.path.iterdir():
                if leftover.name != "lock":
                    leftover.unlink()
            (self.path / "lock").unlink()
            os.rmdir(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
