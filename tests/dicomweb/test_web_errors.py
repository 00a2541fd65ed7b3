"""Wrong URL, refused credentials and a certificate that cannot be verified: clear errors naming the node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.orthanc import OrthancServer
from harness.ports import free_port
from harness.tls_proxy import TlsProxy, self_signed_certificate

from airflow_dicom.dicomweb.client import (
    DicomWebAuthError,
    DicomWebHttpError,
    DicomWebTlsError,
    DicomWebUnreachableError,
)
from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dicomweb.qido import qido_find
from airflow_dicom.dimse.errors import InvalidNodeError
from airflow_dicom.dimse.query import build_query

pytestmark = pytest.mark.integration

QUERY = build_query("STUDY", return_keys=("StudyDate",))


@pytest.fixture(scope="module")
def secured(web_pool: list[OrthancServer]) -> OrthancServer:
    """Orthanc with DICOMweb behind basic authentication (``RegisteredUsers``)."""
    server = OrthancServer(
        aet="WEBAUTH",
        dicomweb=True,
        extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {"alice": "s3cret-pw"}},
    ).start()
    web_pool.append(server)
    return server


@pytest.fixture(scope="module")
def tls(
    web_pool: list[OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """DICOMweb over HTTPS (self-signed certificate for 127.0.0.1): ``(base URL, certificate)``."""
    server = OrthancServer(aet="WEBTLS", dicomweb=True).start()
    web_pool.append(server)
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    with TlsProxy(server.http_port, cert, key) as proxy:
        yield f"https://127.0.0.1:{proxy.port}/dicom-web", cert


def test_basic_auth_is_accepted(secured: OrthancServer) -> None:
    node = DicomWebNode(url=secured.dicomweb_url, auth="basic", username="alice", secret="s3cret-pw")
    assert list(qido_find(node, QUERY)) == []  # an empty server answers, with the credentials


@pytest.mark.parametrize("secret", ["wrong", None])
def test_refused_credentials_name_the_node(secured: OrthancServer, secret: str | None) -> None:
    settings = {"auth": "basic", "username": "alice", "secret": secret} if secret else {}
    node = DicomWebNode(url=secured.dicomweb_url, name="pacs_web", **settings)  # type: ignore[arg-type]
    with pytest.raises(DicomWebAuthError) as caught:
        list(qido_find(node, QUERY))
    text = str(caught.value)
    assert "401" in text and "pacs_web" in text and secured.dicomweb_url.split("//")[1] in text
    assert "wrong" not in text  # the secret is never in a message


def test_wrong_url_names_the_node() -> None:
    node = DicomWebNode(url=f"http://127.0.0.1:{free_port()}/dicom-web", name="gone", connect_timeout=2)
    with pytest.raises(DicomWebUnreachableError, match="connection 'gone'.*cannot reach the server"):
        list(qido_find(node, QUERY))


def test_wrong_path_says_check_the_prefixes(secured: OrthancServer) -> None:
    node = DicomWebNode(
        url=secured.url + "/not-dicom-web", auth="basic", username="alice", secret="s3cret-pw", name="p"
    )
    with pytest.raises(DicomWebHttpError, match="404.*check the base URL"):
        list(qido_find(node, QUERY))


def test_tls_verification_failure_names_the_node(tls: tuple[str, Path]) -> None:
    url, cert = tls
    with pytest.raises(DicomWebTlsError, match="tls_pacs.*TLS certificate verification failed.*CA bundle"):
        list(qido_find(DicomWebNode(url=url, name="tls_pacs"), QUERY))
    # with the server's CA the same node works; without verification too
    assert list(qido_find(DicomWebNode(url=url, ca_bundle=str(cert)), QUERY)) == []
    assert list(qido_find(DicomWebNode(url=url, verify_tls=False), QUERY)) == []


def test_invalid_settings_fail_before_any_request() -> None:
    with pytest.raises(InvalidNodeError, match="not an http"):
        DicomWebNode(url="pacs.example.org")
    with pytest.raises(InvalidNodeError, match="password"):
        DicomWebNode(url="http://pacs", auth="bearer")
