"""DIMSE status codes: named constants, categories and human-readable meanings.

Built on pynetdicom's per-service status tables so every code a PACS may send has a name. The tables are
imported when a status is first described, not with this module (commands that never meet a DIMSE status,
such as ``pseudonymize``, start without pynetdicom).
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache
from types import ModuleType


class Status(IntEnum):
    """The status codes this provider acts on by name."""

    SUCCESS = 0x0000
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    SUB_OPERATIONS_WARNING = 0xB000
    ELEMENT_COERCION = 0xB007
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    UNABLE_TO_PROCESS = 0xC000
    CANNOT_UNDERSTAND = 0xC200
    #: used by our receiver when an instance's identifiers are unsafe for a file name
    UNSAFE_IDENTIFIERS = 0xC210
    #: used by our receiver when the bytes are not a readable dataset (kept in quarantine)
    UNREADABLE_DATASET = 0xC211
    #: used by our pseudonymising receiver when an instance may carry burned-in text (not stored)
    HELD_BACK = 0xC212


@cache
def _pstatus() -> ModuleType:
    """pynetdicom's status module (imported on first use)."""
    from pynetdicom import status

    return status


@cache
def _service_tables() -> dict[str, dict[int, tuple[str, str]]]:
    """pynetdicom's status table of each DIMSE-C service."""
    pstatus = _pstatus()
    return {
        "C-ECHO": pstatus.VERIFICATION_SERVICE_CLASS_STATUS,
        "C-STORE": pstatus.STORAGE_SERVICE_CLASS_STATUS,
        "C-FIND": pstatus.QR_FIND_SERVICE_CLASS_STATUS,
        "C-MOVE": pstatus.QR_MOVE_SERVICE_CLASS_STATUS,
        "C-GET": pstatus.QR_GET_SERVICE_CLASS_STATUS,
    }


_OURS = {
    Status.UNSAFE_IDENTIFIERS: ("Failure", "identifiers are not safe to use as file names"),
    Status.UNREADABLE_DATASET: ("Failure", "dataset could not be read; raw bytes kept in quarantine"),
    Status.HELD_BACK: ("Failure", "held back by the pseudonymising receiver: may carry burned-in text"),
}


def category(status: int) -> str:
    """The category of a status code: Success, Pending, Cancel, Warning or Failure.

    :param status: a DIMSE status code.
    """
    if status in _OURS:
        return _OURS[status][0]
    return _pstatus().code_to_category(status)


def meaning(service: str, status: int) -> str:
    """The standard's short description of ``status`` for ``service``.

    :param service: ``C-ECHO``, ``C-STORE``, ``C-FIND``, ``C-MOVE`` or ``C-GET``.
    :param status: a DIMSE status code.
    """
    if status in _OURS:
        return _OURS[status][1]
    general = _pstatus().GENERAL_STATUS
    table = _service_tables().get(service, general)
    entry = table.get(status) or general.get(status)
    if entry is None:
        return "unknown status"
    text = (entry[1] or entry[0]).strip()
    return text.rstrip(".")


def describe_status(service: str, status: int) -> str:
    """``0xC000 Failure: unable to process``-style text for a status.

    :param service: the DIMSE service that returned it.
    :param status: a DIMSE status code.
    """
    return f"status 0x{status:04X} {category(status)}: {meaning(service, status)}"


def is_success(status: int) -> bool:
    """True for 0x0000."""
    return status == Status.SUCCESS


def is_pending(status: int) -> bool:
    """True for the pending codes 0xFF00 and 0xFF01."""
    return status in (Status.PENDING, Status.PENDING_WARNING)
