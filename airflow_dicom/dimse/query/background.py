"""Run a C-FIND walk in a thread of its own, ahead of whoever consumes its matches.

A node computes a large answer before sending the first match (Orthanc, 2,000 STUDY matches: most of the
query's time). The command line starts the walk here, then imports the landing (pyarrow) while the node
works, instead of one after the other. The association lives and dies in this one thread (pynetdicom
associations are not thread-safe).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


class Prefetched(Generic[T]):
    """Iterate ``source`` in a daemon thread; iterate this object to get its items, in order.

    Exceptions of ``source`` are raised to the consumer. :meth:`close` (or leaving a ``with`` block)
    stops the thread at its next item and closes ``source`` (a generator's ``finally`` runs there, e.g.
    the association is released).

    :param source: the iterator (a generator from :func:`~airflow_dicom.dimse.query.walk.find_matches`).
    :param name: the thread's name.
    """

    def __init__(self, source: Iterator[T], name: str = "find-walk") -> None:
        self._source = source
        self._queue: queue.SimpleQueue[tuple[int, object]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                if self._stop.is_set():
                    break
                self._queue.put((_ITEM, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put((_ERROR, exc))
            return
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        self._queue.put((_END, None))

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]

    def close(self, timeout: float | None = None) -> None:
        """Stop the walk at its next item and wait for the thread (``timeout`` seconds at most).

        :param timeout: longest wait; None waits until the walk's current query is answered.
        """
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
