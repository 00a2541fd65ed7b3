"""What a node offers, and which retrieval service to use (like ADIT: WADO-RS, then C-GET, then C-MOVE).

A ``dicom`` connection may say what its PACS offers (extra field ``capabilities``, e.g. ``"C-FIND C-GET"``;
default: every DIMSE service) and name the ``dicomweb`` connection of the same PACS (extra field
``dicomweb_conn_id``). A ``dicomweb`` connection offers what its ``capabilities`` field lists (default:
QIDO-RS, WADO-RS and STOW-RS). :func:`choose_retrieval` picks the first offered service of
:data:`PREFERENCE`: WADO-RS streams over HTTP with no association limits, C-GET needs no move destination,
C-MOVE needs one registered at the PACS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_dicom.dimse.errors import InvalidRequestError

WADO_RS = "WADO-RS"
C_GET = "C-GET"
C_MOVE = "C-MOVE"

#: retrieval services, most preferred first
PREFERENCE = (WADO_RS, C_GET, C_MOVE)

#: every DIMSE service a ``dicom`` node is assumed to offer unless its connection says otherwise
DIMSE_SERVICES = ("C-ECHO", "C-FIND", C_GET, C_MOVE, "C-STORE")

#: a ``dicomweb`` node's service names (its ``capabilities`` field) -> the transaction names
WEB_SERVICES = {"qido": "QIDO-RS", "wado": WADO_RS, "stow": "STOW-RS"}


def _names(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return [str(v).strip().upper().replace("_", "-") for v in value if str(v).strip()]


def dimse_capabilities(extra: Mapping[str, Any] | None) -> frozenset[str]:
    """The DIMSE services of a ``dicom`` connection (its ``capabilities`` extra field, else all).

    :param extra: the connection's extra fields.
    :raises InvalidRequestError: an unknown service name.
    """
    names = _names((extra or {}).get("capabilities"))
    if not names:
        return frozenset(DIMSE_SERVICES)
    names = [n if n.startswith("C-") else f"C-{n.removeprefix('C')}" for n in names]
    unknown = sorted(set(names) - set(DIMSE_SERVICES))
    if unknown:
        raise InvalidRequestError(
            f"capabilities {', '.join(unknown)} are not DIMSE services ({', '.join(DIMSE_SERVICES)})"
        )
    return frozenset(names)


def web_capabilities(services: Iterable[str]) -> frozenset[str]:
    """The transactions of a ``dicomweb`` node given its service names (``qido``, ``wado``, ``stow``).

    :param services: :attr:`airflow_dicom.dicomweb.node.DicomWebNode.capabilities`.
    """
    return frozenset(WEB_SERVICES[s] for s in services if s in WEB_SERVICES)


def choose_retrieval(offered: Iterable[str], *, allowed: Iterable[str] = PREFERENCE, node: str = "") -> str:
    """The most preferred retrieval service among ``offered`` (WADO-RS > C-GET > C-MOVE).

    :param offered: the services the node offers (any of :data:`PREFERENCE` and others).
    :param allowed: the services the caller can use (e.g. no C-MOVE without a destination).
    :param node: the node, for the message.
    :raises InvalidRequestError: none of the allowed services is offered.
    """
    offered = set(offered)
    allowed = set(allowed)
    for service in PREFERENCE:
        if service in offered and service in allowed:
            return service
    have = ", ".join(s for s in PREFERENCE if s in offered) or "no retrieval service"
    want = ", ".join(s for s in PREFERENCE if s in allowed)
    raise InvalidRequestError(
        f"{node or 'the node'} offers {have}; this task can use {want}. Use DicomMoveOperator (with a "
        "move destination) for C-MOVE, or link a dicomweb connection (extra field dicomweb_conn_id)"
    )
