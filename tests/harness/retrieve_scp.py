"""A small real Query/Retrieve C-GET SCP (pynetdicom) that can be told to be busy, for retry tests.

Orthanc cannot be made to refuse transiently on demand; this peer can: it serves the instances of a list
of files by StudyInstanceUID over real DICOM networking, and

* answers the first ``busy_answers`` C-GET requests with 0xA702 (out of resources, sub-operations), and/or
* accepts at most ``max_associations`` associations at once (pynetdicom then rejects transiently:
  "local limit exceeded").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, Verification

from .ports import free_port


class BusyGetSCP:
    """C-GET SCP over ``files``; use as a context manager.

    :param files: DICOM files to serve.
    :param busy_answers: how many C-GET requests get 0xA702 before it serves normally.
    :param max_associations: concurrent associations accepted (more are rejected transiently).
    """

    def __init__(self, files: Iterable[Path], *, busy_answers: int = 0, max_associations: int = 10) -> None:
        self.by_study: dict[str, list[Path]] = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.by_study.setdefault(str(ds.StudyInstanceUID), []).append(Path(path))
        self.busy_answers = busy_answers
        self.requests = 0
        self.busy_sent = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.aet = "BUSYSCP"
        self._ae = AE(ae_title=self.aet)
        self._ae.maximum_associations = max_associations
        self._ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        self._ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            self._ae.add_supported_context(
                cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False
            )
        self._server: Any = None

    def _handle_get(self, event: Any) -> Any:
        with self._lock:
            self.requests += 1
            busy = self.busy_sent < self.busy_answers
            if busy:
                self.busy_sent += 1
        uid = str(getattr(event.identifier, "StudyInstanceUID", ""))
        paths = self.by_study.get(uid)
        if busy or not paths:
            yield max(1, len(paths or []))  # first the number of sub-operations (0 would end with Success)
            yield (0xA702 if busy else 0xC000), None
            return
        yield len(paths)
        for path in paths:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, pydicom.dcmread(path)

    def __enter__(self) -> BusyGetSCP:
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_GET, self._handle_get)]
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
