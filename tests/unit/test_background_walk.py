"""The walk run ahead in its own thread: items in order, its errors raised here, stopped on close."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from airflow_dicom.dimse.errors import FindTruncatedError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query.background import Prefetched


def test_items_arrive_in_order_from_another_thread() -> None:
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(1000):
            threads.add(threading.current_thread().name)
            yield i

    assert list(Prefetched(source())) == list(range(1000))
    assert threads == {"find-walk"}


def test_the_walks_error_is_raised_to_the_consumer_after_its_items() -> None:
    node = DicomNode("127.0.0.1", 104, "PACS")

    def source() -> Iterator[int]:
        yield 1
        raise FindTruncatedError(node, "STUDY", "study dates 2024-01-01", "0xFE00 after 5 matches", "split")

    got = []
    with pytest.raises(FindTruncatedError):
        for item in Prefetched(source()):
            got.append(item)
    assert got == [1]


def test_close_stops_the_walk_and_runs_its_cleanup() -> None:
    released = threading.Event()
    gate = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(10**9):
                gate.wait(5)
                yield i
        finally:
            released.set()  # the walk's ``with open_association`` is left here

    walk = Prefetched(source())
    walk.close(timeout=0)
    gate.set()
    walk.close(timeout=10)
    assert released.is_set()
