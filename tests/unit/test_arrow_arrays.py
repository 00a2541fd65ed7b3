"""The find table's Arrow arrays built from buffers are what ``pyarrow.array`` builds from the same values."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import date, datetime, time

import pyarrow as pa
import pytest

from airflow_dicom.landing.arrow_arrays import constant, to_array


def _value(rng: random.Random, type_: pa.DataType) -> object:
    if pa.types.is_list(type_):
        if rng.random() < 0.2:
            return None
        items = [_value(rng, type_.value_type) for _ in range(rng.randrange(0, 4))]
        return [item for item in items if item is not None]  # the landing puts no nulls in lists
    if rng.random() < 0.2:
        return None
    if pa.types.is_string(type_):
        return rng.choice(["", "CT", "Müller^Anna", "山田^太郎", "1.2.840.10008", "a\\b", " lead"])
    if pa.types.is_int64(type_):
        return rng.choice([0, -1, 12, 2**62, -(2**63)])
    if pa.types.is_float64(type_):
        return rng.choice([0.0, -1.5, 1e300, float("inf")])
    if pa.types.is_date32(type_):
        return date(rng.randrange(1, 9999), rng.randrange(1, 13), rng.randrange(1, 29))
    if pa.types.is_time64(type_):
        return time(rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6))
    return datetime(rng.randrange(1, 9999), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                    rng.randrange(60), rng.randrange(60), rng.randrange(10**6))  # fmt: skip


TYPES = [
    pa.string(),
    pa.int64(),
    pa.float64(),
    pa.date32(),
    pa.time64("us"),
    pa.timestamp("us"),
    pa.list_(pa.string()),
    pa.list_(pa.date32()),
    pa.list_(pa.int64()),
]


@pytest.mark.parametrize("type_", TYPES, ids=str)
@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 1000])
def test_arrays_are_what_pyarrow_builds(type_: pa.DataType, length: int) -> None:
    rng = random.Random(f"{type_}-{length}")
    values = [_value(rng, type_) for _ in range(length)]
    ours = to_array(values, type_)
    ours.validate(full=True)
    theirs = pa.array(values, type_)
    assert ours.equals(theirs)
    assert ours.null_count == theirs.null_count
    assert ours.to_pylist() == values


def test_constant_and_all_null() -> None:
    assert constant("n", 3, pa.string()).equals(pa.array(["n"] * 3, pa.string()))
    assert constant(None, 9, pa.date32()).equals(pa.array([None] * 9, pa.date32()))
    with pytest.raises(TypeError):
        to_array([b"x"], pa.binary())


def test_landing_a_find_table_imports_no_pandas() -> None:
    code = (
        "import sys\n"
        "from airflow_dicom.landing.table import to_table\n"
        "t = to_table([{'StudyInstanceUID': '1.2', 'StudyDate': '20240101', 'ModalitiesInStudy': 'CT\\\\MR',"
        " 'StudyTime': '1200', 'NumberOfStudyRelatedSeries': '2'}],"
        " ['StudyInstanceUID', 'StudyDate', 'ModalitiesInStudy', 'StudyTime', 'NumberOfStudyRelatedSeries'],"
        " source_node='n', level='STUDY')\n"
        "assert t.num_rows == 1\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
