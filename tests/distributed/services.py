"""PostgreSQL and Redis for the distributed stack, in private temporary directories on free ports.

PostgreSQL refuses to run as root: as root the cluster belongs to ``nobody`` (``runuser``). Each server runs
in its own process group (``setsid``) and is stopped by killing that group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness.ports import free_port, wait_for_port

PG_BIN = Path(os.environ.get("AIRFLOW_DICOM_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Process:
    """One server started with ``setsid``, stopped by its process group.

    :param argv: the command.
    :param log: its log file.
    :param env: its environment.
    :param cwd: its working directory.
    """

    def __init__(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ):
        self.argv = argv
        self.log = log
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        """Start the process in a new session."""
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                ["setsid", *self.argv], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        return self

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (a lost machine: SIGKILL)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the group, then SIGKILL whatever is left; wait for the leader.

        :param grace: seconds between the two.
        """
        if self.popen is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        self.popen = None

    def tail(self, chars: int = 3000) -> str:
        """The end of the log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _as_owner(argv: list[str]) -> list[str]:
    """``argv`` run as ``nobody`` when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


class Postgres(Process):
    """A throw-away PostgreSQL 15 cluster (trust auth, user and database ``airflow``) on a free port.

    :param root: its directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "nobody", "nogroup")
            for parent in root.parents:  # nobody must reach its directory (mkdtemp makes 0700 ones)
                if parent == Path(parent.anchor) or parent.stat().st_uid != 0:
                    break
                parent.chmod(parent.stat().st_mode | 0o111)
        super().__init__(
            _as_owner(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(root / "data"),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(root),
                    "-c",
                    "max_connections=300",
                    "-c",
                    "fsync=off",
                ]
            ),
            root / "postgres.log",
            cwd=root,
        )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``airflow`` database."""
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def start(self) -> Postgres:
        """initdb, start, create the database."""
        done = subprocess.run(
            _as_owner(
                [str(PG_BIN / "initdb"), "-D", str(self.root / "data"), "-U", "airflow", "-A", "trust"]
            ),
            capture_output=True,
            text=True,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        super().start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if done.returncode == 0:
                break
            if not self.running:
                raise RuntimeError(f"postgres exited:\n{self.tail()}")
            time.sleep(0.5)
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow"],
            check=True,
            capture_output=True,
        )
        return self


class Redis(Process):
    """A Redis with no persistence on a free port.

    :param root: its directory.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(root),
        ]
        super().__init__(argv + ["--appendonly", "no"], root / "redis.log", cwd=root)

    @property
    def url(self) -> str:
        """Broker URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        """Start and wait for the port."""
        super().start()
        if not wait_for_port(self.port, timeout=30):
            raise RuntimeError(f"redis did not listen:\n{self.tail()}")
        return self

    def restart(self) -> None:
        """Stop and start again on the same port (the broker's queue is lost, as on a real restart)."""
        self.stop()
        self.start()
