"""Shared fixtures: real Orthanc servers, dcmtk receivers and a synthetic corpus (no mocks).

Import the harness as ``harness.<module>`` (``pythonpath = ["tests"]`` in ``pyproject.toml``).

Session-scoped servers are shared by every test of the session: tests that need an empty PACS
call ``orthanc.clear()`` first; ``loaded_orthanc`` is a separate server holding exactly the
``corpus`` and must be treated as read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from harness.certs import TestPki, make_pki
from harness.dcmtk import DcmtkStorescp
from harness.orthanc import OrthancServer, stop_all
from harness.synth import Corpus, make_corpus

MARKERS = {
    "integration": "talks to real peers (Orthanc, dcmtk, pynetdicom) over loopback",
    "airflow": "needs an Airflow metadata DB / dag.test()",
    "e2e": "drives a running `airflow standalone` end to end",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the project's markers so ``-m`` selections work without warnings."""
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


class LoadedOrthanc(NamedTuple):
    """An Orthanc holding exactly ``corpus`` (unpack as ``pacs, corpus = loaded_orthanc``)."""

    server: OrthancServer
    corpus: Corpus


@pytest.fixture(scope="session")
def _orthanc_pool() -> Iterator[list[OrthancServer]]:
    """Collects the session's Orthanc servers and stops them all at once (each takes ~3.5 s)."""
    servers: list[OrthancServer] = []
    yield servers
    stop_all(servers)


def _start(pool: list[OrthancServer], **kwargs: Any) -> OrthancServer:
    """Start an Orthanc and hand it to the pool for teardown."""
    server = OrthancServer(**kwargs).start()
    pool.append(server)
    return server


@pytest.fixture(scope="session")
def orthanc(_orthanc_pool: list[OrthancServer]) -> OrthancServer:
    """Scratch Orthanc (AET "ORTHANC", every DIMSE service allowed from any AE, no limits)."""
    return _start(_orthanc_pool)


@pytest.fixture(scope="session")
def orthanc_limited(_orthanc_pool: list[OrthancServer]) -> OrthancServer:
    """Orthanc with ``LimitFindResults`` 5 (and ``LimitFindInstances`` 5): C-FIND truncates with 0xFE00."""
    return _start(_orthanc_pool, aet="LIMITED", limit_find_results=5, limit_find_instances=5)


@pytest.fixture(scope="session")
def orthanc_strict(_orthanc_pool: list[OrthancServer]) -> OrthancServer:
    """Orthanc with AET "STRICTPACS" that rejects associations calling any other AE title."""
    return _start(_orthanc_pool, aet="STRICTPACS", check_called_aet=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """20 patients, 40 studies over 2024, 1-2 series and 1-3 instances each, written to a tmp dir."""
    data = make_corpus(
        n_patients=20, studies_per_patient=2, series_per_study=(1, 2), instances_per_series=(1, 3)
    )
    data.write(tmp_path_factory.mktemp("corpus"))
    return data


@pytest.fixture(scope="session")
def loaded_orthanc(_orthanc_pool: list[OrthancServer], corpus: Corpus) -> LoadedOrthanc:
    """A separate Orthanc (AET "LOADED") holding exactly ``corpus`` (uploaded via POST /instances)."""
    server = _start(_orthanc_pool, aet="LOADED")
    server.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    return LoadedOrthanc(server, corpus)


@pytest.fixture
def dcmtk_storescp(tmp_path: Path) -> Iterator[Callable[..., DcmtkStorescp]]:
    """Factory: ``dcmtk_storescp("DEST", fork=True)`` starts a storescp; all are stopped at teardown.

    Files land in ``tmp_path/storescp-<n>`` unless ``directory=`` is given.
    """
    started: list[DcmtkStorescp] = []

    def factory(aet: str = "STORESCP", **kwargs: Any) -> DcmtkStorescp:
        kwargs.setdefault("directory", tmp_path / f"storescp-{len(started)}")
        scp = DcmtkStorescp(aet, **kwargs)
        started.append(scp)
        return scp.start()

    yield factory
    for scp in started:
        scp.cleanup()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A test CA and certificates made with ``openssl`` (good ones name localhost and 127.0.0.1)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
