"""A real Orthanc PACS per test session: own temp dir, free loopback ports, stdlib HTTP client.

Orthanc (Debian package ``orthanc``, 1.10.1 here) is started as a subprocess with a JSON config
written by :func:`orthanc_config`. Its REST API is used to load data, register C-MOVE
destinations and read back what it holds; DICOM traffic goes to ``dicom_port``.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .ports import free_port, wait_for_port

__all__ = ["ORTHANC_BIN", "OrthancError", "OrthancServer", "orthanc_config", "stop_all"]

ORTHANC_BIN = os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get(
    "ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
)

# Transfer syntaxes Orthanc's C-STORE SCP accepts (the "1.2.840.10008.1.*" wildcard covers every
# DICOM-standard syntax, incl. RLE Lossless 1.2.840.10008.1.2.5 and deflated/JPEG families).
_ALL_TRANSFER_SYNTAXES = ["1.2.840.10008.1.*"]

_live: weakref.WeakSet[OrthancServer] = weakref.WeakSet()


class OrthancError(RuntimeError):
    """Orthanc did not start, or its REST API answered with an error."""


def orthanc_config(
    *,
    workdir: Path,
    dicom_port: int,
    http_port: int,
    aet: str = "ORTHANC",
    check_called_aet: bool = False,
    limit_find_results: int = 0,
    limit_find_instances: int = 0,
    default_encoding: str = "Utf8",
    dicomweb: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the Orthanc 1.10 configuration used by the harness (every key exists in 1.10.1).

    ``default_encoding`` is "Utf8" so that non-ASCII names survive C-FIND answers whatever the
    query's SpecificCharacterSet; ``dicomweb`` loads the DICOMweb plugin (Debian ``orthanc-dicomweb``)
    at ``/dicom-web/``; ``extra`` overrides or adds any key.
    """
    config: dict[str, Any] = {
        "Name": f"harness-{aet}",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpDescribeErrors": True,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomCheckCalledAet": check_called_aet,
        "DicomPort": dicom_port,
        "DefaultEncoding": default_encoding,
        "AcceptedTransferSyntaxes": _ALL_TRANSFER_SYNTAXES,
        "UnknownSopClassAccepted": True,
        "DicomScpTimeout": 30,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {},
        "DicomModalitiesInDatabase": True,
        "DicomScuTimeout": 10,
        "StableAge": 2,
        "LimitFindResults": limit_find_results,
        "LimitFindInstances": limit_find_instances,
        "TcpNoDelay": True,
        "KeepAlive": True,
        "SaveJobs": False,
        "JobsHistorySize": 100,
        "SynchronousCMove": True,
        "TranscodeDicomProtocol": True,
        "SyncStorageArea": False,
        "OverwriteInstances": True,
    }
    if dicomweb:
        config["Plugins"] = [DICOMWEB_PLUGIN]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"}
    if extra:
        config.update(extra)
    return config


class OrthancServer:
    """One Orthanc process on fresh loopback ports with a fresh storage/index directory.

    Construct, then ``start()`` (or use as a context manager, which starts and stops it)::

        with OrthancServer(aet="PACS") as pacs:
            pacs.upload_files(paths)
            pacs.register_modality("dest", "DEST", "127.0.0.1", 11113)
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        check_called_aet: bool = False,
        limit_find_results: int = 0,
        limit_find_instances: int = 0,
        default_encoding: str = "Utf8",
        dicomweb: bool = False,
        extra_config: Mapping[str, Any] | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 30.0,
        verbose: bool = False,
    ) -> None:
        """Store the settings; nothing runs until :meth:`start`."""
        self._aet = aet
        self._settings: dict[str, Any] = {
            "aet": aet,
            "check_called_aet": check_called_aet,
            "limit_find_results": limit_find_results,
            "limit_find_instances": limit_find_instances,
            "default_encoding": default_encoding,
            "dicomweb": dicomweb,
            "extra": dict(extra_config or {}),
        }
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self._startup_timeout = startup_timeout
        self._verbose = verbose
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._dicom_port = 0
        self._http_port = 0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until ``/system`` answers; retry on a lost port race."""
        if self._proc is not None:
            return self
        last_error: OrthancError | None = None
        for _attempt in range(3):
            try:
                self._start_once()
                _live.add(self)
                return self
            except OrthancError as exc:
                last_error = exc
                self._cleanup_failed_start()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        """Write a config on new ports into a new dir, spawn Orthanc and wait for it."""
        if self._workdir_arg is not None:
            self._workdir = Path(self._workdir_arg)
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"orthanc-{self._aet.lower()}-"))
        self._dicom_port = free_port()
        self._http_port = free_port()
        config = orthanc_config(
            workdir=self._workdir, dicom_port=self._dicom_port, http_port=self._http_port, **self._settings
        )
        config_path = self._workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        args = [ORTHANC_BIN, f"--logfile={self.log_path}"]
        if self._verbose:
            args.append("--verbose")
        args.append(str(config_path))
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self._workdir / "orthanc.stderr", "wb") as err:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._workdir,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll ``GET /system`` and the DICOM port until both answer or the timeout passes."""
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited with code {self._proc.returncode} during startup:\n{self.log_tail()}"
                )
            try:
                self.get_json("/system", timeout=2.0)
            except (OSError, OrthancError):
                time.sleep(0.1)
                continue
            if wait_for_port(self._dicom_port, timeout=max(0.1, deadline - time.monotonic())):
                return
        raise OrthancError(f"Orthanc did not answer within {self._startup_timeout} s:\n{self.log_tail()}")

    def _cleanup_failed_start(self) -> None:
        """Kill a half-started process and drop its directory before a retry."""
        self._terminate()
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (Orthanc needs ~3.5 s to exit; see :func:`stop_all`)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def _terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` for the PID, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def stop(self, *, keep_dir: bool = False) -> None:
        """Stop Orthanc (terminate, wait for the PID, kill after 10 s) and remove its temp dir."""
        self._terminate()
        _live.discard(self)
        if self._own_workdir and not keep_dir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        """Start and return the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # ------------------------------------------------------------------ properties

    @property
    def running(self) -> bool:
        """True while the Orthanc process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the Orthanc process, if started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def dicom_port(self) -> int:
        """DICOM (DIMSE) port on 127.0.0.1."""
        return self._dicom_port

    @property
    def http_port(self) -> int:
        """REST API port on 127.0.0.1."""
        return self._http_port

    @property
    def aet(self) -> str:
        """Orthanc's own AE title (the called AE title for SCUs)."""
        return self._aet

    @property
    def url(self) -> str:
        """Base URL of the REST API, without a trailing slash."""
        return f"http://{self.host}:{self._http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb plugin (start with ``dicomweb=True``)."""
        return f"{self.url}/dicom-web"

    @property
    def workdir(self) -> Path:
        """The directory holding config, logs, storage and index."""
        if self._workdir is None:
            raise OrthancError("Orthanc is not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        """Orthanc's own log file (``--logfile``)."""
        return self.workdir / "orthanc.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Orthanc's log and of its stderr, for error messages."""
        parts = []
        for path in (self.workdir / "orthanc.stderr", self.log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ REST

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> bytes:
        """Send one HTTP request to the REST API and return the body; raise OrthancError on >= 400."""
        headers = {"Content-Type": content_type} if body is not None else {}
        users = self._settings["extra"].get("RegisteredUsers") or {}
        if users and self._settings["extra"].get("AuthenticationEnabled"):
            user, password = next(iter(users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        """GET ``path`` and decode the JSON answer."""
        return json.loads(self.request("GET", path, timeout=timeout) or b"null")

    def post_json(self, path: str, payload: Any, timeout: float = 60.0) -> Any:
        """POST a JSON payload and decode the JSON answer (None when empty)."""
        raw = self.request("POST", path, json.dumps(payload).encode("utf-8"), timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def put_json(self, path: str, payload: Any, timeout: float = 60.0) -> Any:
        """PUT a JSON payload and decode the JSON answer (None when empty)."""
        raw = self.request("PUT", path, json.dumps(payload).encode("utf-8"), timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def delete(self, path: str) -> None:
        """DELETE a resource."""
        self.request("DELETE", path)

    # ------------------------------------------------------------------ modalities

    def register_modality(
        self, name: str, aet: str, host: str = "127.0.0.1", port: int = 104, **extra: Any
    ) -> None:
        """Register (or replace) a DICOM modality, e.g. a C-MOVE destination, via ``PUT /modalities``.

        ``extra`` adds Orthanc modality fields such as ``AllowTranscoding`` or ``Timeout``. Other
        modalities with the same AE title are removed first: Orthanc picks the destination of a C-MOVE by
        AE title, so a stale entry left by an earlier test (pointing at a stopped port) would win.
        """
        for other, fields in self.modalities().items():
            if other != name and fields.get("AET") == aet:
                self.remove_modality(other)
        self.put_json(f"/modalities/{name}", {"AET": aet, "Host": host, "Port": int(port), **extra})

    def remove_modality(self, name: str) -> None:
        """Delete a registered modality."""
        self.delete(f"/modalities/{name}")

    def modalities(self) -> dict[str, Any]:
        """Registered modalities as Orthanc reports them (``/modalities?expand``)."""
        result: dict[str, Any] = self.get_json("/modalities?expand")
        return result

    # ------------------------------------------------------------------ data

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store one DICOM file through ``POST /instances``; return Orthanc's answer (ID, Status, ...)."""
        raw = self.request("POST", "/instances", data, content_type="application/dicom")
        answer: dict[str, Any] = json.loads(raw)
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancError(f"upload refused: {answer}")
        return answer

    def upload_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """Upload every file in ``paths``; return the answers in order."""
        return [self.upload(Path(p).read_bytes()) for p in paths]

    def clear(self) -> None:
        """Delete every patient (hence every study, series and instance)."""
        for patient_id in self.get_json("/patients"):
            self.delete(f"/patients/{patient_id}")

    def _main_tags(self, level: str, tag: str) -> set[str]:
        """Collect one main DICOM tag over every resource of a level (``/<level>?expand``)."""
        return {item["MainDicomTags"].get(tag, "") for item in self.get_json(f"/{level}?expand")}

    def patient_ids(self) -> set[str]:
        """PatientIDs held."""
        return self._main_tags("patients", "PatientID")

    def study_uids(self) -> set[str]:
        """StudyInstanceUIDs held."""
        return self._main_tags("studies", "StudyInstanceUID")

    def series_uids(self) -> set[str]:
        """SeriesInstanceUIDs held."""
        return self._main_tags("series", "SeriesInstanceUID")

    def instance_uids(self) -> set[str]:
        """SOPInstanceUIDs held."""
        return self._main_tags("instances", "SOPInstanceUID")

    def statistics(self) -> dict[str, Any]:
        """``GET /statistics`` (CountPatients, CountStudies, CountSeries, CountInstances, ...)."""
        result: dict[str, Any] = self.get_json("/statistics")
        return result

    def count_instances(self) -> int:
        """Number of instances held."""
        return int(self.statistics()["CountInstances"])

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc's internal id of an instance given its SOPInstanceUID, or None."""
        raw = self.request(
            "POST", "/tools/lookup", sop_instance_uid.encode("ascii"), content_type="text/plain"
        )
        for hit in json.loads(raw):
            if hit.get("Type") == "Instance":
                return str(hit["ID"])
        return None

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """The stored DICOM file of an instance, byte for byte."""
        orthanc_id = self.find_instance(sop_instance_uid)
        if orthanc_id is None:
            raise OrthancError(f"no instance {sop_instance_uid}")
        return self.request("GET", f"/instances/{orthanc_id}/file")


def stop_all(servers: Iterable[OrthancServer]) -> None:
    """Stop several servers concurrently: SIGTERM to all first, then wait for each."""
    servers = list(servers)
    for server in servers:
        server.signal_stop()
    for server in servers:
        server.stop()


atexit.register(lambda: stop_all(list(_live)))
