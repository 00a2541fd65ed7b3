"""Pure logic of the C-FIND request: validation, intervals, time pieces, columns (no network)."""

from __future__ import annotations

from datetime import date

import pytest

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.query import DateRange, TimeRange, build_query, find_all, key_level


def test_unknown_return_key_is_refused_with_a_suggestion() -> None:
    with pytest.raises(InvalidRequestError, match=r"'StudyDat'.*did you mean StudyDate"):
        build_query("STUDY", return_keys=["PatientName", "StudyDat"])


def test_unknown_matching_key_and_sequences_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="matching keys: 'NoSuchKeyword'"):
        build_query("STUDY", matching={"NoSuchKeyword": "x"})
    with pytest.raises(InvalidRequestError, match="ReferencedStudySequence has VR SQ"):
        build_query("STUDY", return_keys=["ReferencedStudySequence"])
    with pytest.raises(InvalidRequestError, match="QueryRetrieveLevel is set by the query"):
        build_query("STUDY", return_keys=["QueryRetrieveLevel"])


def test_unknown_keyword_fails_before_any_association() -> None:
    # nothing listens on port 1: had find() opened an association we would get NodeUnreachableError
    node = DicomNode("127.0.0.1", 1, "NOBODY")
    with pytest.raises(InvalidRequestError):
        find_all(node, build_query("STUDY", return_keys=["PatientNam"]))


def test_level_and_model_validation() -> None:
    assert build_query("instance").level == "IMAGE"
    with pytest.raises(InvalidRequestError, match="query level 'WORKLIST'"):
        build_query("WORKLIST")
    with pytest.raises(InvalidRequestError, match="Study Root model has no PATIENT level"):
        build_query("PATIENT", model="study")
    assert build_query("STUDY", model="Patient Root").model == "patient"
    with pytest.raises(InvalidRequestError, match="information model"):
        build_query("STUDY", model="worklist")


def test_matching_values_are_normalised() -> None:
    query = build_query(
        "STUDY",
        matching={
            "StudyInstanceUID": ["1.2.3", "1.2.4"],
            "PatientName": "DOE*",
            "PatientBirthDate": date(1970, 1, 2),
            "AccessionNumber": None,
        },
    )
    assert query.matching == {
        "StudyInstanceUID": "1.2.3\\1.2.4",
        "PatientName": "DOE*",
        "PatientBirthDate": "19700102",
        "AccessionNumber": "",
    }


def test_dates_and_modalities() -> None:
    query = build_query("STUDY", date_from="2024-01-01", date_to="20241231", modality="ct, mr")
    assert query.date_range == DateRange(date(2024, 1, 1), date(2024, 12, 31))
    assert query.modalities == ("CT", "MR")
    with pytest.raises(InvalidRequestError, match="either as date_from/date_to or as a StudyDate"):
        build_query("STUDY", date_from="2024-01-01", matching={"StudyDate": "20240101"})
    with pytest.raises(InvalidRequestError, match="ends .* before it starts"):
        build_query("STUDY", date_from="2024-02-01", date_to="2024-01-01")
    with pytest.raises(InvalidRequestError, match="is not a date"):
        build_query("STUDY", date_from="yesterday")
    with pytest.raises(InvalidRequestError, match="Modality is a series attribute"):
        build_query("STUDY", matching={"Modality": "CT"})
    with pytest.raises(InvalidRequestError, match="not a DICOM modality"):
        build_query("SERIES", modality="C T")


def test_date_range_halves_cover_the_range_without_overlap() -> None:
    whole = DateRange(date(2024, 1, 1), date(2024, 12, 31))
    assert whole.dicom() == "20240101-20241231"
    first, second = whole.halves()
    assert first.first == whole.first and second.last == whole.last
    assert (second.first - first.last).days == 1
    assert first.days + second.days == whole.days == 366
    assert DateRange(date(2024, 5, 1), date(2024, 5, 1)).dicom() == "20240501"
    assert len(DateRange(date(2024, 2, 27), date(2024, 3, 1)).each_day()) == 4


def test_time_pieces_are_open_at_the_ends_and_use_the_shortest_lower_bound() -> None:
    day = TimeRange()
    assert day.whole_day
    morning, afternoon = day.halves()
    assert morning.dicom() == "-115959.999999"  # open start: also catches empty StudyTime values
    assert afternoon.dicom() == "12-"  # open end; "12" sorts before "1200", "120000", "120000.5"
    assert TimeRange(45015, 45029).dicom() == "123015-123029.999999"
    assert TimeRange(45000, 45029).dicom() == "1230-123029.999999"


def test_time_halving_reaches_single_seconds_and_covers_the_day() -> None:
    pieces = [TimeRange()]
    seconds = 0
    while pieces:
        piece = pieces.pop()
        if piece.first == piece.last:
            seconds += 1
            continue
        left, right = piece.halves()
        assert left.last + 1 == right.first
        pieces += [left, right]
    assert seconds == 86400


def test_key_levels_and_columns() -> None:
    assert key_level("PatientName") == "PATIENT"
    assert key_level("ModalitiesInStudy") == "STUDY"
    assert key_level("Modality") == "SERIES"
    assert key_level("SOPClassUID") == "IMAGE"
    study = build_query("STUDY", return_keys=["PatientName"], modality="CT")
    assert study.columns == ("StudyInstanceUID", "StudyDate", "PatientName", "ModalitiesInStudy")
    image = build_query("IMAGE", return_keys=["Modality"])
    assert image.columns[:4] == ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate")
    patient = build_query("PATIENT", return_keys=["PatientName", "StudyDescription"], date_from="2024-01-01")
    assert patient.walks_studies
    assert patient.columns == ("PatientID", "StudyDate", "PatientName")
    assert not build_query("PATIENT").walks_studies
