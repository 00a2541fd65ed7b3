"""Our receiver as a separate process: ``airflow-dicom storescp`` started, signalled and killed by tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .ports import free_port

__all__ = ["CLI", "ReceiverProcess", "listening"]

#: the ``airflow-dicom`` command with this interpreter (``python -m airflow_dicom.cli`` would register the
#: subcommands in a second copy of the module and find none)
CLI = [sys.executable, "-c", "import sys; from airflow_dicom.cli import main; sys.exit(main())"]


def listening(port: int) -> bool:
    """True if some socket LISTENs on ``port`` (reads /proc/net/tcp*, makes no connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


class ReceiverProcess:
    """``python -m airflow_dicom.cli storescp`` on 127.0.0.1 with its output in ``log_path``.

    :param data_dir: the receiver's data directory.
    :param aet: its AE title.
    :param port: TCP port (a free one by default; reuse it to restart on the same port).
    :param extra_args: more ``storescp`` options (``--layout``, ``--allow-aet``...).
    :param log_path: where stdout+stderr go (default: next to the data directory).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        aet: str = "RECEIVER",
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.aet = aet
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"receiver-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line."""
        return [
            *CLI,
            "storescp",
            "--aet",
            self.aet,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        """Start the process and wait until it listens."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {self.proc.returncode}:\n{self.log()}")
            if listening(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"receiver did not listen on {self.port} within {timeout} s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to exit; return its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process (no clean-up at all) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        """Everything the process wrote."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ReceiverProcess:
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()
