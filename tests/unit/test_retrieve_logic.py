"""Pure retrieval logic: time windows, items and UID lists, the report, C-GET contexts, options, planning."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.retrieve import (
    COMPLETE,
    FAILED,
    SKIPPED,
    Attempt,
    MoveDestination,
    RetrieveItem,
    RetrieveOptions,
    get_contexts,
    make_items,
    parse_uid_list,
    plan_retrieval,
)
from airflow_dicom.dimse.window import TimeWindow
from airflow_dicom.landing.report import ReportWriter, completed_items, read_report, write_report
from airflow_dicom.landing.retrieve_items import items_from_parquet

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


# ------------------------------------------------------------------------------ windows


def test_overnight_window_wraps_midnight() -> None:
    window = TimeWindow.parse(("20:00", "06:00"), "Europe/Paris")
    assert window.is_open(datetime(2026, 1, 10, 21, 0, tzinfo=PARIS))
    assert window.is_open(datetime(2026, 1, 11, 5, 59, 59, tzinfo=PARIS))
    assert not window.is_open(datetime(2026, 1, 11, 6, 0, tzinfo=PARIS))
    assert not window.is_open(datetime(2026, 1, 11, 12, 0, tzinfo=PARIS))
    noon = datetime(2026, 1, 11, 12, 0, tzinfo=PARIS)
    assert window.next_open(noon) == datetime(2026, 1, 11, 20, 0, tzinfo=PARIS)
    night = datetime(2026, 1, 11, 23, 0, tzinfo=PARIS)
    assert window.closes_at(night) == datetime(2026, 1, 12, 6, 0, tzinfo=PARIS)
    assert window.closes_at(noon) is None
    # an instant given in UTC is read in the window's zone (20:00 Paris = 19:00 UTC in winter)
    assert window.is_open(datetime(2026, 1, 11, 19, 30, tzinfo=UTC))
    assert not window.is_open(datetime(2026, 1, 11, 18, 30, tzinfo=UTC))


def test_same_day_window_with_seconds_and_time_objects() -> None:
    window = TimeWindow.parse([time(8, 0), "12:00:30"])
    assert window.tz is UTC
    assert window.is_open(datetime(2026, 3, 1, 12, 0, 29, tzinfo=UTC))
    assert not window.is_open(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    assert window.next_open(datetime(2026, 3, 1, 13, 0, tzinfo=UTC)) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert TimeWindow.parse("08:00-12:00") == TimeWindow(time(8), time(12), UTC)
    assert TimeWindow.parse(None) is None


def test_window_across_a_daylight_saving_change() -> None:
    window = TimeWindow.parse(("20:00", "06:00"), "Europe/Paris")
    # the night of 28-29 March 2026: clocks go forward at 02:00; the window still closes at 06:00 local
    start = datetime(2026, 3, 28, 20, 0, tzinfo=PARIS)
    assert window.closes_at(start + timedelta(minutes=1)) == datetime(2026, 3, 29, 6, 0, tzinfo=PARIS)
    assert window.closes_at(start).astimezone(UTC) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "window, tz, message",
    [
        (("25:00", "06:00"), None, "not a time of day"),
        (("20:00",), None, "must be a pair"),
        (("20:00", "20:00"), None, "never opens"),
        (("20:00", "06:00"), "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_windows_are_refused(window, tz, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        TimeWindow.parse(window, tz)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="timezone-aware"):
        TimeWindow.parse(("20:00", "06:00")).is_open(datetime(2026, 1, 1, 12, 0))


# ------------------------------------------------------------------------------ items


def test_items_validate_uids_and_levels() -> None:
    items = make_items(["1.2.3", " 1.2.4 ", "1.2.3"], "study", expected={"1.2.4": 5})
    assert [(i.level, i.uid, i.expected) for i in items] == [("STUDY", "1.2.3", None), ("STUDY", "1.2.4", 5)]
    assert items[0].study_uid == "1.2.3"
    for bad in ("1.2.x", "../etc", "1..2", "1." + "2" * 70, ""):
        with pytest.raises(InvalidRequestError):
            RetrieveItem("STUDY", bad)
    with pytest.raises(InvalidRequestError, match="retrieve level"):
        RetrieveItem("FRAME", "1.2.3")
    with pytest.raises(InvalidRequestError, match="not a count"):
        RetrieveItem("STUDY", "1.2.3", expected=-1)


def test_identifiers_per_level() -> None:
    series = RetrieveItem("SERIES", "1.2.3.4", study_uid="1.2.3").identifier()
    assert (series.QueryRetrieveLevel, series.StudyInstanceUID, series.SeriesInstanceUID) == (
        "SERIES",
        "1.2.3",
        "1.2.3.4",
    )
    image = RetrieveItem("IMAGE", "1.2.3.4.5", study_uid="1.2.3", series_uid="1.2.3.4").identifier()
    assert image.SOPInstanceUID == "1.2.3.4.5" and image.SeriesInstanceUID == "1.2.3.4"
    patient = RetrieveItem("PATIENT", "MRN 0042")
    assert patient.identifier().PatientID == "MRN 0042"
    assert "0042" not in patient.label and patient.label.startswith("patient#")


def test_parse_uid_list_accepts_what_templates_render() -> None:
    assert parse_uid_list(["1.2", "1.3"]) == ["1.2", "1.3"]
    assert parse_uid_list("['1.2', '1.3']") == ["1.2", "1.3"]
    assert parse_uid_list('["1.2", "1.3"]') == ["1.2", "1.3"]
    assert parse_uid_list("1.2, 1.3\n1.4") == ["1.2", "1.3", "1.4"]
    assert parse_uid_list([["1.2"], "1.3 1.4"]) == ["1.2", "1.3", "1.4"]
    assert parse_uid_list(None) == []
    with pytest.raises(InvalidRequestError):
        parse_uid_list("[1.2.3,")


# ------------------------------------------------------------------------------ options, contexts


def test_options_validate_and_back_off_exponentially() -> None:
    options = RetrieveOptions(backoff=1.5, max_backoff=5)
    assert [options.delay(n) for n in (1, 2, 3, 4)] == [1.5, 3.0, 5, 5]
    for bad in ({"parallel": 0}, {"max_attempts": 0}, {"time_budget": 0}, {"priority": 3}, {"pause": -1}):
        with pytest.raises(InvalidRequestError):
            RetrieveOptions(**bad)


def test_get_contexts_fit_in_one_association_with_scp_roles() -> None:
    contexts, roles = get_contexts("STUDY")
    assert len(contexts) <= 128
    assert contexts[0].abstract_syntax == "1.2.840.10008.5.1.4.1.2.2.3"  # study root C-GET
    storage = {c.abstract_syntax for c in contexts[1:]}
    assert {r.sop_class_uid for r in roles} == storage
    assert all(r.scp_role and not r.scu_role for r in roles)
    ct = [c.transfer_syntax for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.2"]
    assert ["1.2.840.10008.1.2.1"] in ct and ["1.2.840.10008.1.2.5"] in ct  # separate contexts
    assert get_contexts("PATIENT")[0][0].abstract_syntax == "1.2.840.10008.5.1.4.1.2.1.3"
    with pytest.raises(InvalidRequestError, match="at most 128"):
        get_contexts("STUDY", [f"1.2.3.{n}" for n in range(30)])


def test_destination_kinds() -> None:
    assert MoveDestination("NODE").kind == "node"
    assert MoveDestination("SVC", "/data").kind == "service"
    assert MoveDestination("ME", "/data", port=0).kind == "embedded"
    with pytest.raises(InvalidRequestError, match="needs a data directory"):
        MoveDestination("ME", port=11112)
    with pytest.raises(Exception, match="AE title"):
        MoveDestination("WAY-TOO-LONG-AE-TITLE")


# ------------------------------------------------------------------------------ report and planning


def _attempt(uid: str, status: str, **kw) -> Attempt:
    now = datetime.now(UTC)
    return Attempt(
        item=RetrieveItem("STUDY", uid), service="C-MOVE", status=status, started=now, finished=now, **kw
    )


def test_report_round_trip_and_latest_status_wins(tmp_path) -> None:
    path = str(tmp_path / "report")
    assert read_report(path).empty
    write_report(
        [_attempt("1.1", FAILED, reason="0xC000").row("run1"), _attempt("1.2", COMPLETE).row("run1")], path
    )
    write_report([_attempt("1.1", COMPLETE, attempt=1, completed=3).row("run2")], path)
    write_report([_attempt("1.2", SKIPPED).row("run2")], path)
    frame = read_report(path)
    assert len(frame) == 4
    assert list(frame.columns[:3]) == ["uid", "level", "study_uid"]
    assert str(frame.started.dtype) == "datetime64[ms, UTC]"
    done = completed_items(path)
    assert set(done) == {("STUDY", "1.1"), ("STUDY", "1.2")}
    assert done[("STUDY", "1.2")]["status"] == COMPLETE  # a skip does not hide the attempt that completed it
    # stray files (a temp file of a writer that died) are ignored
    (tmp_path / "report" / "part-x.parquet.tmp").write_bytes(b"partial")
    assert len(read_report(path)) == 4


def test_report_writer_batches_and_flushes_on_exit(tmp_path) -> None:
    path = str(tmp_path / "report")
    with ReportWriter(path, "run-7", batch=2, interval=3600) as writer:
        for n in range(5):
            writer.add(_attempt(f"1.{n}", COMPLETE).row())
        assert len(writer.files) == 2
    assert len(writer.files) == 3 and writer.rows_written == 5
    assert set(read_report(path).run_id) == {"run-7"}
    nowhere = ReportWriter(None, "x")
    nowhere.add(_attempt("1.9", COMPLETE).row())
    nowhere.flush()
    assert nowhere.files == []


def test_plan_skips_items_complete_in_the_report(tmp_path) -> None:
    path = str(tmp_path / "report")
    write_report([_attempt("1.1", COMPLETE, completed=4, expected=4).row("r")], path)
    todo, skipped = plan_retrieval(make_items(["1.1", "1.2"]), completed=completed_items(path))
    assert [i.uid for i in todo] == ["1.2"]
    assert [(a.item.uid, a.status, a.completed) for a in skipped] == [("1.1", SKIPPED, 4)]


# ------------------------------------------------------------------------------ find results as input


def test_items_from_find_parquet_with_filter_and_expected_counts(tmp_path) -> None:
    for day, rows in {
        "2024-01-05": [("1.2.1", 3, "CT"), ("1.2.2", 1, "MR")],
        "2024-01-06": [("1.2.3", 2, "CT")],
    }.items():
        folder = tmp_path / "find" / f"StudyDate={day}"
        folder.mkdir(parents=True)
        table = pa.table(
            {
                "StudyInstanceUID": [r[0] for r in rows],
                "NumberOfStudyRelatedInstances": pa.array([r[1] for r in rows], pa.int64()),
                "ModalitiesInStudy": [[r[2]] for r in rows],
            }
        )
        pq.write_table(table, folder / "part-0.parquet")
    items = items_from_parquet(str(tmp_path / "find"), "STUDY")
    assert sorted((i.uid, i.expected) for i in items) == [("1.2.1", 3), ("1.2.2", 1), ("1.2.3", 2)]
    ct = items_from_parquet(str(tmp_path / "find"), "STUDY", {"ModalitiesInStudy": "CT"})
    assert sorted(i.uid for i in ct) == ["1.2.1", "1.2.3"]
    several = items_from_parquet(str(tmp_path / "find"), "STUDY", "NumberOfStudyRelatedInstances >= 2")
    assert sorted(i.uid for i in several) == ["1.2.1", "1.2.3"]
    one_day = items_from_parquet(str(tmp_path / "find"), "STUDY", {"StudyInstanceUID": ["1.2.2"]})
    assert [i.uid for i in one_day] == ["1.2.2"]
    with pytest.raises(InvalidRequestError, match="no SeriesInstanceUID column"):
        items_from_parquet(str(tmp_path / "find"), "SERIES")
    with pytest.raises(InvalidRequestError, match="do not exist"):
        items_from_parquet(str(tmp_path / "nothing"), "STUDY")
    with pytest.raises(InvalidRequestError, match="not in the find results"):
        items_from_parquet(str(tmp_path / "find"), "STUDY", {"Modality": "CT"})
