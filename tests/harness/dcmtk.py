"""dcmtk (3.6.7, Debian) as the independent DICOM peer: a storescp receiver and thin SCU wrappers.

Beware: pynetdicom installs console scripts with the same names (``storescu``, ``storescp``,
``findscu``, ``movescu``, ``echoscu``) into the venv's bin. :func:`dcmtk_tool` therefore resolves
dcmtk's binaries in /usr/bin (or ``$DCMTK_BIN``), never from the venv.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import pydicom
from pydicom.filereader import read_file_meta_info

from .ports import free_port, wait_for_port

__all__ = [
    "DCMTK_ENV",
    "DcmtkStorescp",
    "dcmtk_tool",
    "echoscu",
    "findscu",
    "findscu_datasets",
    "getscu",
    "movescu",
    "storescu",
    "storescu_config",
]

#: Environment for dcmtk processes: Debian's dcmtk honours TCP_NODELAY=1 (no 40 ms delayed ACKs).
DCMTK_ENV: dict[str, str] = {**os.environ, "TCP_NODELAY": "1"}

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")


def dcmtk_tool(name: str) -> str:
    """Absolute path of a dcmtk binary (``$DCMTK_BIN``, /usr/bin, /usr/local/bin), not pynetdicom's."""
    dirs = [os.environ.get("DCMTK_BIN", ""), "/usr/bin", "/usr/local/bin"]
    for directory in filter(None, dirs):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"dcmtk tool {name!r} not found (apt-get install dcmtk)")


def _run(
    args: Sequence[str], timeout: float, cwd: str | os.PathLike[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk command with TCP_NODELAY=1, capturing text output, never raising on failure."""
    return subprocess.run(
        list(args),
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def _listening(port: int) -> bool:
    """True if some socket LISTENs on ``port`` (Linux /proc/net/tcp*; no connection is made)."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    if not found_table:
        return wait_for_port(port, timeout=0.2)
    return False


class DcmtkStorescp:
    """dcmtk ``storescp`` on a free loopback port writing every received object to ``directory``.

    Accepts all transfer syntaxes it supports (``+xa``, incl. RLE/JPEG/deflated) and names files
    after the SOP Instance UID (``-uf``: ``<modality prefix>.<SOPInstanceUID>``). Use as a
    context manager or call :meth:`start` / :meth:`stop`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        aet: str = "STORESCP",
        directory: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        fork: bool = False,
        bit_preserving: bool = False,
        promiscuous: bool = False,
        accept: Sequence[str] = ("+xa",),
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        """Store the settings; ``directory`` defaults to a new temp dir removed on ``__exit__``.

        ``fork`` serves associations in child processes (several peers at once); ``bit_preserving``
        writes datasets exactly as received (``+B``); ``promiscuous`` accepts unknown SOP classes;
        ``accept`` are storescp's transfer-syntax options (``()``: its default, uncompressed only).
        """
        self.aet = aet
        self._scratch = Path(tempfile.mkdtemp(prefix=f"storescp-{aet.lower()}-"))
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else self._scratch / "received"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self._fork = fork
        self._bit_preserving = bit_preserving
        self._promiscuous = promiscuous
        self._accept = tuple(accept)
        self._extra_args = tuple(extra_args)
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """storescp's stdout+stderr (verbose)."""
        return self._scratch / "storescp.log"

    @property
    def running(self) -> bool:
        """True while storescp is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The storescp command line."""
        args = [
            dcmtk_tool("storescp"),
            "-v",
            "--aetitle",
            self.aet,
            "-od",
            str(self.directory),
            *self._accept,
            "-dhl",
        ]
        args.append("-uf")
        if self._bit_preserving:
            args.append("+B")
        if self._fork:
            args.append("--fork")
        if self._promiscuous:
            args.append("-pm")
        args.extend(self._extra_args)
        args.append(str(self.port))
        return args

    def start(self) -> DcmtkStorescp:
        """Start storescp and wait until its port is listening."""
        if self._proc is not None:
            return self
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env=DCMTK_ENV,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"storescp exited with {self._proc.returncode}:\n{self.log_tail()}")
            if _listening(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"storescp did not listen on {self.port} within {self._startup_timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate storescp (and, with ``fork``, its children: the whole process group it leads)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Stop, then remove the scratch dir (and ``directory`` if it was created here)."""
        self.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> DcmtkStorescp:
        """Start and return the receiver."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and clean up."""
        self.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of storescp's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def files(self) -> list[Path]:
        """Received files (complete or being written), sorted by name."""
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 30.0) -> bool:
        """Poll until at least ``count`` files were received; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.files()) >= count:
                return True
            time.sleep(0.05)
        return len(self.files()) >= count

    def received_sop_uids(self) -> set[str]:
        """SOPInstanceUIDs of the received files (read with pydicom, stopping before pixel data)."""
        return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.files()}

    def received_datasets(self) -> dict[str, pydicom.Dataset]:
        """Received datasets (with pixel data) keyed by SOPInstanceUID."""
        out = {}
        for path in self.files():
            ds = pydicom.dcmread(path)
            out[str(ds.SOPInstanceUID)] = ds
        return out

    def clear(self) -> None:
        """Delete every received file."""
        for path in self.files():
            path.unlink()


# ---------------------------------------------------------------------------- SCU wrappers


def _expand_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files in ``paths``, directories expanded recursively (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])
    return out


def storescu_config(paths: Iterable[str | os.PathLike[str]], directory: str | os.PathLike[str]) -> Path:
    """Write a storescu ``--config-file`` proposing each (SOP class, transfer syntax) found in the files.

    storescu's ``-x*`` options propose at most one compressed syntax, and it converts a file to
    whatever uncompressed syntax the peer chose in a shared context (Implicit -> Explicit); with
    the default proposal it cannot send RLE at all. One context per (SOP class, syntax) pair
    found in the file meta (plus a fallback context with all uncompressed syntaxes per SOP class)
    makes storescu send every file as it is.
    """
    pairs: set[tuple[str, str]] = set()
    for path in _expand_files(paths):
        meta = read_file_meta_info(path)
        pairs.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))

    def group(ts: str) -> str:
        return f"TS_{ts.replace('.', '_')}"

    contexts: list[tuple[str, str]] = []
    for sop_class in sorted({sop for sop, _ in pairs}):
        for ts in sorted({ts for sop, ts in pairs if sop == sop_class}):
            contexts.append((sop_class, group(ts)))
        contexts.append((sop_class, "Uncompressed"))
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} presentation contexts needed, DICOM allows 128")
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(_UNCOMPRESSED, 1)]
    for ts in sorted({ts for _, ts in pairs}):
        lines += [f"[{group(ts)}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    lines += [f"PresentationContext{i} = {sop}\\{ts}" for i, (sop, ts) in enumerate(contexts, 1)]
    lines += ["[[Profiles]]", "[Harness]", "PresentationContexts = Contexts"]
    path = Path(directory) / "storescu.cfg"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def storescu(
    host: str,
    port: int,
    called_aet: str,
    paths: Iterable[str | os.PathLike[str]],
    calling_aet: str = "STORESCU",
    extra_args: Sequence[str] = (),
    *,
    propose: str = "auto",
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Send files (directories are scanned recursively) with dcmtk storescu, each in its own syntax.

    ``propose="auto"`` writes a ``--config-file`` from the files' meta (see
    :func:`storescu_config`) so compressed files go as they are, whatever the mix; ``propose=""``
    leaves negotiation to ``extra_args`` (e.g. ``["-xr"]``). storescu halts at the first failed
    store unless ``extra_args`` has ``-nh``.
    """
    paths = [Path(p) for p in paths]
    args = [dcmtk_tool("storescu"), "-v", "-aet", calling_aet, "-aec", called_aet, "-to", "10"]
    if any(p.is_dir() for p in paths):
        args += ["+sd", "+r"]
    with tempfile.TemporaryDirectory(prefix="storescu-") as scratch:
        if propose == "auto":
            args += ["-xf", str(storescu_config(paths, scratch)), "Harness"]
        elif propose:
            args.append(propose)
        args += [*extra_args, host, str(port), *map(str, paths)]
        return _run(args, timeout)


def echoscu(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "ECHOSCU",
    extra_args: Sequence[str] = (),
    *,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with dcmtk echoscu; returncode 0 means the association and the echo succeeded."""
    args = [
        dcmtk_tool("echoscu"),
        "-v",
        "-aet",
        calling_aet,
        "-aec",
        called_aet,
        "-to",
        "10",
        *extra_args,
        host,
        str(port),
    ]
    return _run(args, timeout)


def _key_args(keys: Mapping[str, str] | Sequence[str]) -> list[str]:
    """``-k`` arguments from {"PatientName": "A*"} (empty value = return key) or raw strings."""
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    return [arg for item in items for arg in ("-k", item)]


def findscu(
    host: str,
    port: int,
    called_aet: str,
    keys: Mapping[str, str] | Sequence[str],
    level: str = "STUDY",
    calling_aet: str = "FINDSCU",
    extra_args: Sequence[str] = (),
    *,
    model: str = "-S",
    output_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """C-FIND with dcmtk findscu (study root by default; ``model="-P"`` for patient root).

    ``keys`` maps keywords (or ``gggg,eeee``) to values; QueryRetrieveLevel is added. With
    ``output_dir`` each response is extracted to ``rspNNNN.dcm`` there (``-X``).
    """
    args = [
        dcmtk_tool("findscu"),
        "-v",
        "-aet",
        calling_aet,
        "-aec",
        called_aet,
        "-to",
        "10",
        model,
        "-k",
        f"QueryRetrieveLevel={level}",
        *_key_args(keys),
    ]
    if output_dir is not None:
        args += ["-X", "-od", str(output_dir)]
    args += [*extra_args, host, str(port)]
    return _run(args, timeout)


def findscu_datasets(
    host: str,
    port: int,
    called_aet: str,
    keys: Mapping[str, str] | Sequence[str],
    level: str = "STUDY",
    **kwargs: object,
) -> tuple[subprocess.CompletedProcess[str], list[pydicom.Dataset]]:
    """Run :func:`findscu` extracting responses; return the process and the response datasets."""
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        proc = findscu(host, port, called_aet, keys, level, output_dir=out, **kwargs)  # type: ignore[arg-type]
        datasets = [pydicom.dcmread(p) for p in sorted(Path(out).glob("rsp*.dcm"))]
    return proc, datasets


def movescu(
    host: str,
    port: int,
    called_aet: str,
    destination_aet: str,
    keys: Mapping[str, str] | Sequence[str],
    level: str = "STUDY",
    calling_aet: str = "MOVESCU",
    extra_args: Sequence[str] = (),
    *,
    model: str = "-S",
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """C-MOVE with dcmtk movescu to a third-party destination (``-aem``), study root by default.

    The destination must be known to the PACS (for Orthanc: ``register_modality``). Success
    shows as returncode 0; inspect ``stdout``/``stderr`` for the sub-operation counts.
    """
    args = [
        dcmtk_tool("movescu"),
        "-v",
        "-aet",
        calling_aet,
        "-aec",
        called_aet,
        "-aem",
        destination_aet,
        "-to",
        "10",
        model,
        "-k",
        f"QueryRetrieveLevel={level}",
        *_key_args(keys),
        *extra_args,
        host,
        str(port),
    ]
    return _run(args, timeout)


def getscu(
    host: str,
    port: int,
    called_aet: str,
    keys: Mapping[str, str] | Sequence[str],
    output_dir: str | os.PathLike[str],
    level: str = "STUDY",
    calling_aet: str = "GETSCU",
    extra_args: Sequence[str] = (),
    *,
    model: str = "-S",
    prefer: str = "+xr",
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """C-GET with dcmtk getscu into ``output_dir`` (study root by default).

    ``prefer`` picks the storage transfer syntax getscu offers first for the C-STOREs coming
    back on the same association (``+xr``: RLE Lossless, then uncompressed); the PACS
    transcodes anything else.
    """
    args = [dcmtk_tool("getscu"), "-v", "-aet", calling_aet, "-aec", called_aet, "-to", "10", model]
    if prefer:
        args.append(prefer)
    args += ["-od", str(output_dir), "-k", f"QueryRetrieveLevel={level}", *_key_args(keys), *extra_args]
    args += [host, str(port)]
    return _run(args, timeout)
