"""Fixtures of the DICOMweb tests: Orthanc with the Debian ``orthanc-dicomweb`` plugin (real server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.orthanc import OrthancServer, stop_all
from harness.synth import Corpus

from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dimse.node import DicomNode


@pytest.fixture(scope="session")
def web_pool() -> Iterator[list[OrthancServer]]:
    """The DICOMweb Orthancs of the session, stopped together at the end."""
    servers: list[OrthancServer] = []
    yield servers
    stop_all(servers)


@pytest.fixture(scope="session")
def web_pacs(web_pool: list[OrthancServer], corpus: Corpus) -> OrthancServer:
    """Orthanc with DICOMweb holding exactly ``corpus`` (read-only: DIMSE and DICOMweb on the same data)."""
    server = OrthancServer(aet="WEBPACS", dicomweb=True).start()
    web_pool.append(server)
    server.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    return server


@pytest.fixture(scope="session")
def web_limited(web_pool: list[OrthancServer], corpus: Corpus) -> OrthancServer:
    """Orthanc with DICOMweb and ``LimitFindResults``/``LimitFindInstances`` 5 holding ``corpus``."""
    server = OrthancServer(
        aet="WEBLIMIT", dicomweb=True, limit_find_results=5, limit_find_instances=5
    ).start()
    web_pool.append(server)
    server.upload_files(corpus.paths[i.sop_uid] for i in corpus.instances)
    return server


@pytest.fixture(scope="session")
def _web_scratch_server(web_pool: list[OrthancServer]) -> OrthancServer:
    server = OrthancServer(aet="WEBSCRATCH", dicomweb=True).start()
    web_pool.append(server)
    return server


@pytest.fixture
def web_scratch(_web_scratch_server: OrthancServer) -> OrthancServer:
    """An empty DICOMweb Orthanc for tests that store (emptied before each test)."""
    _web_scratch_server.clear()
    return _web_scratch_server


def web_node(server: OrthancServer, **settings: object) -> DicomWebNode:
    """The DICOMweb node of ``server``."""
    return DicomWebNode(url=server.dicomweb_url, name=f"web-{server.aet.lower()}", **settings)  # type: ignore[arg-type]


def dimse_node(server: OrthancServer) -> DicomNode:
    """The DIMSE node of the same ``server``."""
    return DicomNode(host=server.host, port=server.dicom_port, called_ae_title=server.aet, name=server.aet)
