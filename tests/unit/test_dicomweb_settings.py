"""DICOMweb node settings, connection parsing and the retrieval preference (pure logic)."""

from __future__ import annotations

import pytest

from airflow_dicom.dicomweb.capabilities import choose_retrieval, dimse_capabilities, web_capabilities
from airflow_dicom.dicomweb.client import make_session, service_url
from airflow_dicom.dicomweb.node import DicomWebNode, web_node_from_connection
from airflow_dicom.dimse.errors import InvalidNodeError, InvalidRequestError


def test_preference_is_wado_then_get_then_move() -> None:
    assert choose_retrieval({"C-MOVE", "C-GET", "WADO-RS"}) == "WADO-RS"
    assert choose_retrieval({"C-MOVE", "C-GET"}) == "C-GET"
    assert choose_retrieval({"C-MOVE"}) == "C-MOVE"
    with pytest.raises(InvalidRequestError, match="pacs offers C-MOVE; this task can use WADO-RS, C-GET"):
        choose_retrieval({"C-MOVE", "C-FIND"}, allowed=("WADO-RS", "C-GET"), node="pacs")


def test_capabilities_from_connections() -> None:
    assert dimse_capabilities({}) >= {"C-GET", "C-MOVE"}
    assert dimse_capabilities({"capabilities": "c-find, move"}) == {"C-FIND", "C-MOVE"}
    with pytest.raises(InvalidRequestError, match="C-WADO"):
        dimse_capabilities({"capabilities": "wado"})
    assert web_capabilities(("qido", "wado")) == {"QIDO-RS", "WADO-RS"}
    assert not DicomWebNode(url="http://pacs/dw", capabilities="qido").offers("wado")


def test_connection_fields() -> None:
    node = web_node_from_connection(
        "pacs_web",
        "https://pacs.example.org/dicom-web/",
        {"wado_prefix": "wado", "verify_tls": "false", "read_timeout": "30", "max_results": "500"},
        login="alice",
        password="secret",
    )
    assert node.url == "https://pacs.example.org/dicom-web" and node.auth == "basic"
    assert (node.verify_tls, node.read_timeout, node.max_results) == (False, 30.0, 500)
    assert service_url(node, "wado") == "https://pacs.example.org/dicom-web/wado"
    assert service_url(node, "qido") == "https://pacs.example.org/dicom-web"
    assert "secret" not in repr(node) and "secret" not in node.describe() and "pacs_web" in node.describe()
    bearer = web_node_from_connection("t", "pacs", {}, password="tok", port=8042, schema="dicom-web")
    assert bearer.url == "http://pacs:8042/dicom-web" and bearer.auth == "bearer"
    assert make_session(bearer).headers["Authorization"] == "Bearer tok"
    ca = DicomWebNode(url="https://pacs", ca_bundle="/etc/ca.pem")
    assert make_session(ca).verify == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"url": "ftp://pacs"}, "url"),
        ({"url": "http://pacs", "auth": "kerberos"}, "auth"),
        ({"url": "http://pacs", "auth": "basic", "secret": "x"}, "login"),
        ({"url": "http://pacs", "read_timeout": "soon"}, "read_timeout"),
        ({"url": "http://pacs", "page_size": 0}, "page_size"),
        ({"url": "http://pacs", "capabilities": "qido c-get"}, "capabilities"),
    ],
)
def test_invalid_settings_name_the_field(settings: dict, field: str) -> None:
    with pytest.raises(InvalidNodeError, match=field):
        DicomWebNode(**settings)
