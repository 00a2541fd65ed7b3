"""Where instances go (:class:`MoveDestination`) and what our receiver holds (:class:`ArrivalCheck`).

Destinations: our receiver embedded for the run (C-MOVE to ourselves), the long-running receiver service
writing to a data directory we can read, or a third node (nothing is started locally and nothing can be
cross-checked). C-GET stores through the receiver's store core on the requesting association.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from airflow_dicom.dimse.arrivals import study_arrivals
from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.node import validate_ae_title
from airflow_dicom.dimse.retrieve.items import RetrieveItem
from airflow_dicom.dimse.tls import ServerTls


@dataclass
class MoveDestination:
    """Where a C-MOVE sends the instances.

    :param ae_title: the destination AE title the PACS knows.
    :param data_dir: the data directory of *our* receiver (embedded or service); ``None`` for a third node.
    :param port: listen here with an embedded receiver for the run; ``None`` if the receiver runs elsewhere.
    :param host: address the embedded receiver listens on.
    :param layout: storage layout of the embedded receiver.
    :param tls: TLS settings of the embedded receiver (the PACS then delivers over TLS), or None.
    :param receiver_process: run the embedded receiver in a process of its own (True), in the retrieving
        process (False), or decide by the retrieval's size (None: see
        :func:`~airflow_dicom.dimse.receiver.process.use_receiver_process`).
    """

    ae_title: str
    data_dir: str | Path | None = None
    port: int | None = None
    host: str = "0.0.0.0"
    layout: str = "patient"
    tls: ServerTls | None = None
    receiver_process: bool | None = None

    def __post_init__(self) -> None:
        self.ae_title = validate_ae_title(self.ae_title, "move destination AE title")
        if self.port is not None and self.data_dir is None:
            raise InvalidRequestError("an embedded receiver (a receive port) needs a data directory")
        if self.port is not None and not 0 <= int(self.port) <= 65535:
            raise InvalidRequestError(f"receive port {self.port} is outside 0-65535")

    @property
    def kind(self) -> str:
        """``embedded``, ``service`` or ``node``."""
        if self.port is not None:
            return "embedded"
        return "service" if self.data_dir is not None else "node"

    def describe(self) -> str:
        """For messages: ``DEST (embedded receiver on port 11113)``."""
        if self.kind == "embedded":
            return f"{self.ae_title} (embedded receiver on port {self.port})"
        if self.kind == "service":
            return f"{self.ae_title} (receiver service writing to {self.data_dir})"
        return f"{self.ae_title} (third node)"


class ArrivalCheck:
    """What our receiver holds for an item, read from its arrival records under ``data_dir``.

    :param data_dir: the receiver's data directory.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)

    def held(self, item: RetrieveItem) -> tuple[int, int] | None:
        """``(instances, bytes)`` held for ``item``; ``None`` when it cannot be told (PATIENT level, or a
        SERIES/IMAGE item without its study UID).

        :param item: the item.
        """
        if item.study_uid is None:
            return None
        state = study_arrivals(self.data_dir, item.study_uid)
        records = list(state.instances.values())
        if item.level == "SERIES":
            records = [r for r in records if r.series_uid == item.uid]
        elif item.level == "IMAGE":
            records = [r for r in records if r.sop_uid == item.uid]
        return len(records), sum(r.bytes for r in records)
