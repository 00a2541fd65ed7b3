"""pynetdicom's own ``qrscp`` app as a PACS (the one ``make demo`` and ``make ui`` use).

It answers C-FIND, C-MOVE and C-GET from its SQLite index, returns no ``ModalitiesInStudy`` at STUDY level
(the node the modality fallback exists for) and answers a STUDY query once per instance. Seeded with
``airflow-dicom send``; stopped by SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from .ports import free_port, wait_for_port
from .receiver_proc import CLI

__all__ = ["QrscpPacs"]


class QrscpPacs:
    """One ``python -m pynetdicom qrscp`` on 127.0.0.1 with its files under ``workdir``.

    :param workdir: where its configuration, database, instances and log go.
    :param aet: its AE title.
    :param destinations: C-MOVE destinations ``{AE title: port}`` on 127.0.0.1.
    """

    def __init__(self, workdir: Path, aet: str = "QRSCP", destinations: dict[str, int] | None = None) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.port = free_port()
        self.destinations = dict(destinations or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "qrscp.log"

    def config(self) -> Path:
        """Write qrscp's ini file; returns its path."""
        instances = self.workdir / "instances"
        instances.mkdir(parents=True, exist_ok=True)
        text = (
            "[DEFAULT]\n"
            f"    ae_title: {self.aet}\n    port: {self.port}\n    max_pdu: 16382\n"
            "    acse_timeout: 30\n    dimse_timeout: 30\n    network_timeout: 30\n"
            "    bind_address: 127.0.0.1\n"
            f"    instance_location: {instances}\n"
            f"    database_location: {self.workdir / 'instances.sqlite'}\n"
            "    log_identifier: False\n"
        )
        for aet, port in self.destinations.items():
            text += f"\n[{aet}]\n    address: 127.0.0.1\n    port: {port}\n"
        path = self.workdir / "qrscp.ini"
        path.write_text(text)
        return path

    def start(self, timeout: float = 20.0) -> QrscpPacs:
        """Start it and wait until it listens."""
        config = self.config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        if not wait_for_port(self.port, timeout=timeout):
            self.stop()
            raise RuntimeError(f"qrscp not listening on {self.port}:\n{self.log_path.read_text()[-3000:]}")
        return self

    def seed(self, source: Path) -> None:
        """C-STORE every file under ``source`` (``airflow-dicom send``, one association).

        :param source: a directory of DICOM files (uncompressed: qrscp keeps what it can decode).
        """
        node = ["--host", "127.0.0.1", "--port", str(self.port), "--aet", self.aet]
        result = subprocess.run(
            [*CLI, "send", str(source), *node, "--parallel", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"seeding qrscp failed:\n{result.stdout}\n{result.stderr}")

    def connection(self) -> dict[str, object]:
        """This PACS as an Airflow connection (``AIRFLOW_CONN_*`` JSON or REST API body fields)."""
        return {
            "conn_type": "dicom",
            "host": "127.0.0.1",
            "port": self.port,
            "extra": {"called_ae_title": self.aet},
        }

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> QrscpPacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
