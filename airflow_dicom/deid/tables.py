"""The actions of PS3.15 Table E.1-1 and the option columns used here.

Source of the Basic Profile column: dicom-anonymizer's ``dicomfields_2026c`` (Kitware/KitwareMedical, PyPI
2.1.0), a transcription of the standard's current Table E.1-1 (2026c) regenerated from the standard by a
script in that project; we import its lists rather than retyping ~700 rows. The table module is loaded
from the installed package's file without running the package's ``__init__`` (which imports pydicom and
its anonymiser, ~0.4 s of every start-up, none of which we use). Its combined actions are
resolved as the standard allows, towards a valid output: ``X/Z`` -> Z, ``X/D``, ``Z/D`` and ``X/Z/D`` -> D
(a dummy value), ``X/Z/U*`` -> keep with the UIDs inside remapped.

The option columns (*Retain Patient Characteristics*, *Retain Device Identity*, *Clean Descriptors*) are
short; they are listed here from the same table's option columns (``K`` or ``C``).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType


def _load_table_module(name: str = "dicomfields_2026c") -> ModuleType:
    """dicom-anonymizer's ``dicom_anonymization_databases.<name>``, loaded from its file alone.

    :param name: the table module (one per edition of the standard).
    """
    package = importlib.util.find_spec("dicomanonymizer")
    if package is None or not package.submodule_search_locations:
        raise ImportError("dicom-anonymizer is not installed: pip install 'dicom-anonymizer>=2.1'")
    path = f"{package.submodule_search_locations[0]}/dicom_anonymization_databases/{name}.py"
    spec = importlib.util.spec_from_file_location(f"_airflow_dicom_e11_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"dicom-anonymizer has no table {name} ({path})")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e11 = _load_table_module()

#: actions
REMOVE = "X"
EMPTY = "Z"
DUMMY = "D"
UID = "U"
KEEP_REMAP = "K"  # keep (a sequence: walk it, remapping the UIDs inside)
CLEAN = "C"


def _tag(entry: tuple[int, ...]) -> int:
    return (entry[0] << 16) | entry[1]


def _basic_actions() -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []  # (value, mask, action) for repeating groups (50xx, 60xx)
    for names, action in (
        (e11.X_TAGS, REMOVE),
        (e11.Z_TAGS, EMPTY),
        (e11.D_TAGS, DUMMY),
        (e11.U_TAGS, UID),
        (e11.X_Z_TAGS, EMPTY),
        (e11.Z_D_TAGS, DUMMY),
        (e11.X_D_TAGS, DUMMY),
        (e11.X_Z_D_TAGS, DUMMY),
        (e11.X_Z_U_STAR_TAGS, KEEP_REMAP),
    ):
        for entry in names:
            if len(entry) == 4:
                value = _tag(entry)
                mask = (entry[2] << 16) | entry[3]
                masked.append((value & mask, mask, action))
            else:
                exact[_tag(entry)] = action
    return exact, masked


BASIC_ACTIONS, MASKED_ACTIONS = _basic_actions()

#: Retain Patient Characteristics Option: K (or C) in Table E.1-1.
PATIENT_CHARACTERISTICS: frozenset[int] = frozenset(
    {
        0x00101010,  # Patient's Age
        0x00101020,  # Patient's Size
        0x00101030,  # Patient's Weight
        0x00100040,  # Patient's Sex
        0x00102160,  # Ethnic Group
        0x001021A0,  # Smoking Status
        0x001021C0,  # Pregnancy Status
        0x00102203,  # Patient's Sex Neutered
        0x00102000,  # Medical Alerts (C)
        0x00102110,  # Allergies (C)
        0x00380050,  # Special Needs (C)
        0x00380500,  # Patient State (C)
        0x00101022,  # Patient's Body Mass Index
        0x00101023,  # Measured AP Dimension
        0x00101024,  # Measured Lateral Dimension
    }
)

#: Retain Device Identity Option: K in Table E.1-1.
DEVICE_IDENTITY: frozenset[int] = frozenset(
    {
        0x00181000,  # Device Serial Number
        0x00081010,  # Station Name
        0x00181002,  # Device UID
        0x00500020,  # Device Description
        0x3010002D,  # Device Label
        0x00181008,  # Gantry ID
        0x0018700A,  # Detector ID
        0x00181004,  # Plate ID
        0x00181007,  # Cassette ID
        0x00181005,  # Generator ID
        0x00181003,  # Device ID
        0x00189371,  # X-Ray Detector ID
        0x00189367,  # X-Ray Source ID
        0x30080105,  # Source Serial Number
        0x300A00B2,  # Treatment Machine Name
    }
)

#: Clean Descriptors Option: C in Table E.1-1 (kept, with identifying text replaced).
DESCRIPTORS: frozenset[int] = frozenset(
    {
        0x00081030,  # Study Description
        0x0008103E,  # Series Description
        0x00181030,  # Protocol Name
        0x00204000,  # Image Comments
        0x00184000,  # Acquisition Comments
        0x001021B0,  # Additional Patient History
        0x00321060,  # Requested Procedure Description
        0x00400254,  # Performed Procedure Step Description
        0x00400280,  # Comments on the Performed Procedure Step
        0x00324000,  # Study Comments
        0x00081080,  # Admitting Diagnoses Description
        0x00102180,  # Occupation
        0x00400007,  # Scheduled Procedure Step Description
        0x00181400,  # Acquisition Device Processing Description
        0x00700081,  # Content Description
    }
)


def basic_action(tag: int) -> str | None:
    """The Basic Profile's action for ``tag``, or None when Table E.1-1 does not list it.

    :param tag: the tag as a 32-bit integer.
    """
    action = BASIC_ACTIONS.get(tag)
    if action is None and (tag >> 16) & 0xFF00 in (0x5000, 0x6000):
        for value, mask, masked in MASKED_ACTIONS:
            if tag & mask == value:
                return masked
    return action
