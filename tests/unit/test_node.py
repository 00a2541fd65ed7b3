"""DicomNode validation and the connection -> node mapping (pure logic, no network)."""

from __future__ import annotations

import pytest

from airflow_dicom.dimse.errors import InvalidNodeError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.hooks.connection import node_from_connection


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"called_ae_title": "A" * 17}, "called_ae_title"),
        ({"called_ae_title": ""}, "called_ae_title"),
        ({"called_ae_title": "   "}, "called_ae_title"),
        ({"called_ae_title": "BACK\\SLASH"}, "called_ae_title"),
        ({"calling_ae_title": "ÄRZTE"}, "calling_ae_title"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "http"}, "port"),
        ({"host": ""}, "host"),
        ({"host": None}, "host"),
        ({"acse_timeout": 0}, "acse_timeout"),
        ({"dimse_timeout": "soon"}, "dimse_timeout"),
        ({"max_pdu": 100}, "max_pdu"),
        ({"tls": "maybe"}, "tls"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str) -> None:
    settings = {"host": "pacs.example", "port": 104, "called_ae_title": "PACS", **kwargs}
    with pytest.raises(InvalidNodeError) as info:
        DicomNode(**settings)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_valid_node_normalises_strings() -> None:
    node = DicomNode(
        host=" pacs ", port="11112", called_ae_title="PACS ", acse_timeout="5", max_pdu="0", tls="yes"
    )
    assert (node.host, node.port, node.called_ae_title, node.acse_timeout, node.max_pdu, node.tls) == (
        "pacs",
        11112,
        "PACS",
        5.0,
        0,
        True,
    )
    assert node.calling_ae_title == "AIRFLOW"
    assert DicomNode.from_dict(node.to_dict()) == node


def test_seventeen_characters_refused_sixteen_accepted() -> None:
    assert DicomNode(host="h", port=104, called_ae_title="A" * 16).called_ae_title == "A" * 16
    with pytest.raises(InvalidNodeError, match="17 characters"):
        DicomNode(host="h", port=104, called_ae_title="A" * 17)


def test_connection_plain_and_prefixed_extras_give_the_same_node() -> None:
    plain = node_from_connection(
        "a", "10.1.2.3", 104, {"called_ae_title": "PACS", "calling_ae_title": "ME", "dimse_timeout": "12"}
    )
    prefixed = node_from_connection(
        "b",
        "10.1.2.3",
        "104",
        {
            "extra__dicom__called_ae_title": "PACS",
            "extra__dicom__calling_ae_title": "ME",
            "dimse_timeout": 12,
        },
    )
    assert plain == prefixed
    assert plain.dimse_timeout == 12.0


def test_connection_without_called_aet_or_port_is_refused() -> None:
    with pytest.raises(InvalidNodeError, match="called_ae_title"):
        node_from_connection("pacs", "h", 104, {})
    with pytest.raises(InvalidNodeError, match="port"):
        node_from_connection("pacs", "h", None, {"called_ae_title": "PACS"})
