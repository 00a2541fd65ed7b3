"""Our receiver in a process of its own: the C-MOVE destination a long retrieval embeds.

A C-MOVE to ourselves runs two workloads at once: the requestor (one C-MOVE per study, its pending responses)
and the receiver (one association per study from the PACS, every instance written and recorded). In one
process they share one interpreter lock, so they share one core: measured on the scale set (600 studies /
2,939 instances from Orthanc, 2 cores, quiet), the move took 8.9 s with the receiver in the requesting
process and 5.9 s with it in a process of its own (``movescu`` + ``storescp``, also two processes: 3.3 s);
the receiver's process used ~4.2 s of CPU, the requestor's ~2.3 s. A process costs ~0.4 s to start (Python and
the DICOM stack), so the engine uses one for long retrievals only (:func:`use_receiver_process`).

The parent (:class:`ReceiverProcess`) starts ``python -m airflow_dicom.dimse.receiver.process`` and writes the
receiver's settings as one JSON line to its standard input (a TLS key given as PEM text never appears in a
command line); the child answers one JSON line on its standard output: ``{"port": N}`` once listening or
``{"error": ...}``. The child serves until its standard input is closed (by :meth:`ReceiverProcess.stop`, or
because the parent died), then stops as :meth:`Receiver.stop` does and exits. Its log records come back as
JSON lines on its standard error and are logged by the parent under their own logger names, so a task's log
holds the receiver's lines as it would with the receiver in the task's process. What arrived is read from the
arrival records in the data directory, as for the receiver service; nothing else crosses the boundary.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from typing import IO, Any

from airflow_dicom.dimse.tls import ServerTls, TlsConfigError

log = logging.getLogger("airflow_dicom.dimse.receiver.process")  # also when run as __main__

#: a retrieval of at least this many items gets its receiver in a process of its own (``auto``): below it
#: the ~0.4 s start-up costs more than sharing one core does (~5 ms per study measured)
PROCESS_MIN_ITEMS = 100
#: seconds the child gets to start listening
START_TIMEOUT = 60.0
#: the receiver's settings that cross to the child (:class:`~.server.Receiver` keyword arguments)
SETTINGS = (
    "data_dir",
    "ae_title",
    "host",
    "port",
    "layout",
    "max_associations",
    "acse_timeout",
    "dimse_timeout",
    "network_timeout",
)


def use_receiver_process(choice: bool | None, items: int) -> bool:
    """Whether an embedded receiver runs in a process of its own.

    :param choice: True or False to decide; None for automatic: yes for :data:`PROCESS_MIN_ITEMS` items or
        more on a host with at least two cores (one core gains nothing from a second process).
    :param items: the retrieval's items.
    """
    if choice is not None:
        return bool(choice)
    return items >= PROCESS_MIN_ITEMS and (os.cpu_count() or 1) >= 2


class ReceiverProcessError(OSError):
    """The receiver process could not start, or ended before it was asked to."""


class ReceiverProcess:
    """A :class:`~.server.Receiver` running in a child process, with the receiver's context-manager shape.

    :param tls: TLS settings of the receiver, or None.
    :param grace: seconds in-flight associations get when stopping (as :meth:`Receiver.stop`).
    :param settings: the receiver's keyword arguments named in :data:`SETTINGS`.
    """

    def __init__(self, *, tls: ServerTls | None = None, grace: float = 10.0, **settings: Any) -> None:
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise TypeError(f"not a setting of the receiver process: {', '.join(sorted(unknown))}")
        self.settings = {k: str(v) if k == "data_dir" else v for k, v in settings.items()}
        self.tls = tls
        self.grace = grace
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._logs: threading.Thread | None = None
        self._stopping = False
        self.exit_code: int | None = None

    @property
    def failure(self) -> str | None:
        """Why the receiver is gone while it should be serving (None while it serves or after a stop)."""
        proc = self._proc
        if proc is None or self._stopping or proc.poll() is None:
            return None
        return f"the embedded receiver's process ended unexpectedly (exit status {proc.returncode})"

    def start(self) -> ReceiverProcess:
        """Start the child and wait until it listens; returns self.

        :raises TlsConfigError: the TLS settings are unusable (checked by the child).
        :raises ValueError: a setting is invalid.
        :raises ReceiverProcessError: it cannot listen (e.g. the port is taken) or did not start.
        """
        config = dict(self.settings)
        config["tls"] = asdict(self.tls) if self.tls is not None else None
        config["grace"] = self.grace
        config["levels"] = {name: logging.getLogger(name).getEffectiveLevel() for name in _LOGGERS}
        line = json.dumps(config, default=lambda value: getattr(value, "value", str(value))).encode()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_dicom.dimse.receiver.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._logs = threading.Thread(
            target=_relay_logs, args=(self._proc.stderr, self), name="receiver-process-logs", daemon=True
        )
        self._logs.start()
        try:
            self._proc.stdin.write(line + b"\n")
            self._proc.stdin.flush()
            answer = _read_line(self._proc.stdout, START_TIMEOUT)
        except (OSError, ValueError) as exc:
            self._kill()
            raise ReceiverProcessError(f"the embedded receiver's process did not start: {exc}") from exc
        if "port" in answer:
            self.port = int(answer["port"])
            log.debug("receiver process %d listening on port %d", self._proc.pid, self.port)
            return self
        self._kill()
        message = str(answer.get("error") or "no answer")
        kind = answer.get("type")
        if kind == "TlsConfigError":
            raise TlsConfigError(message)
        if kind == "ValueError":
            raise ValueError(message)
        raise ReceiverProcessError(answer.get("errno") or 0, message)

    def stop(self, grace: float | None = None) -> None:
        """Close the child's input (it stops as :meth:`Receiver.stop`: in-flight associations finish) and
        wait for it; killed if it outlives the grace period by 15 s.

        :param grace: unused (the grace period was given at start); accepted for the receiver's shape.
        """
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:  # the child is gone already (broken pipe): its exit status is collected below
            self.exit_code = proc.poll()
        try:
            self.exit_code = proc.wait(self.grace + 15.0)
        except subprocess.TimeoutExpired:
            log.warning("the embedded receiver's process %d did not stop: killing it", proc.pid)
            self._kill()
        if self._logs is not None:
            self._logs.join(5.0)
        self._proc = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        proc.kill()
        self.exit_code = proc.wait()

    def __enter__(self) -> ReceiverProcess:
        """Start the child (see :meth:`start`)."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the child (see :meth:`stop`)."""
        self.stop()


#: loggers whose levels the child takes from the parent
_LOGGERS = ("airflow_dicom", "pynetdicom")


def _read_line(stream: IO[bytes], timeout: float) -> dict[str, Any]:
    """The child's one-line JSON answer, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise ValueError(f"no answer within {timeout:g} s")
    line = stream.readline()
    if not line:
        raise ValueError("it exited before listening")
    return json.loads(line)


def _relay_logs(stream: IO[bytes], owner: ReceiverProcess) -> None:
    """Log the child's records (JSON lines) under their own logger names; other lines as they are."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\n")
        try:
            record = json.loads(text)
            logging.getLogger(record["name"]).log(int(record["level"]), "%s", record["message"])
        except (ValueError, KeyError, TypeError):
            if text.strip():
                log.warning("receiver process: %s", text)
    stream.close()
    proc = owner._proc
    if proc is not None and not owner._stopping:
        try:  # its output closes as it exits: give the exit a moment to be seen
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return  # it closed its standard error but lives on: nothing to report
    failure = owner.failure
    if failure:
        log.error("%s", failure)


class _JsonLines(logging.Handler):
    """The child's log handler: one JSON line per record on standard error."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            line = json.dumps({"name": record.name, "level": record.levelno, "message": message})
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def child_main() -> int:
    """The child: read the settings, serve until standard input closes, stop, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    config = json.loads(sys.stdin.readline())
    root = logging.getLogger()
    root.addHandler(_JsonLines())
    root.setLevel(logging.WARNING)
    for name, level in (config.pop("levels", None) or {}).items():
        logging.getLogger(name).setLevel(int(level))
    grace = float(config.pop("grace", 10.0))
    tls_settings = config.pop("tls", None)
    # imported here: the parent imports this module without the receiver's stack
    from airflow_dicom.dimse.receiver.server import Receiver

    try:
        tls = ServerTls(**tls_settings) if tls_settings else None
        receiver = Receiver(tls=tls, **config).start()
    except (TlsConfigError, ValueError) as exc:
        _answer({"error": str(exc), "type": type(exc).__name__})
        return 1
    except OSError as exc:
        _answer({"error": exc.strerror or str(exc), "errno": exc.errno})
        return 1
    _answer({"port": receiver.port})
    os.dup2(2, 1)  # anything printed later goes where the log goes, never into the answer's pipe
    started = time.monotonic()
    sys.stdin.read()  # until the parent closes it (or dies)
    receiver.stop(grace)
    log.debug("receiver process served %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
