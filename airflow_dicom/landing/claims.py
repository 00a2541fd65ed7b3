"""Claims on retrieval batches in the shared data directory, so two workers never retrieve one batch at once.

A claim is an exclusive ``flock`` on ``<batch file>.claim``, held while the batch is retrieved. The kernel
(or the NFS lock manager) drops it when its holder dies, so a task retried on another worker after its
first worker was lost claims the batch at once, while a task Celery delivered a second time (after the
broker's visibility timeout, the first copy still running) waits for the first copy and then finds the
batch's studies complete in the report.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def claim(path: str, poll: float = 2.0) -> Iterator[None]:
    """Hold the claim on ``path`` (waiting while another process holds it).

    :param path: the batch file; the claim is ``<path>.claim`` beside it.
    :param poll: seconds between tries while another holder has it.
    """
    claim_path = f"{path}.claim"
    fd = os.open(claim_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited == 0.0:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    log.info(
                        "batch %s is being retrieved by %s: waiting for it", path, holder or "another task"
                    )
                time.sleep(poll)
                waited += poll
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def read_batch(path: str) -> list[str]:
    """The UIDs of a batch file (one per line, optionally followed by its expected instance count).

    :param path: the batch file.
    """
    return list(read_batch_expected(path))


def read_batch_expected(path: str) -> dict[str, int | None]:
    """``{uid: expected instance count or None}`` of a batch file, in file order.

    A line is ``<uid>`` or ``<uid> <count>``: with the count, a retried batch skips the studies our receiver
    already holds completely (its arrival records), also when the retrieval report had not been written yet.

    :param path: the batch file.
    """
    out: dict[str, int | None] = {}
    with open(path, encoding="ascii") as handle:
        for line in handle:
            fields = line.split()
            if fields:
                out[fields[0]] = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return out


def write_batch(path: str, studies: dict[str, int | None]) -> None:
    """Write a batch file: one ``<uid>`` or ``<uid> <count>`` line per study.

    :param path: the batch file.
    :param studies: ``{uid: expected instance count or None}``.
    """
    with open(path, "w", encoding="ascii") as handle:
        handle.write("".join(uid + ("" if n is None else f" {n}") + "\n" for uid, n in studies.items()))
