"""DicomFindOperator: C-FIND a node for the run's study dates and land the complete result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, BaseHook, BaseOperator

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.query import DEFAULT_RETURN_KEYS, build_query
from airflow_dicom.hooks.dicom import DicomHook
from airflow_dicom.hooks.dicomweb import node_hook
from airflow_dicom.landing.results import FORMATS


class DicomFindOperator(BaseOperator):
    """Find studies (or patients, series, instances) on a DICOM node and land them as Parquet, CSV or SQL.

    By default the study dates are the run's data interval (``[data_interval_start, data_interval_end)``
    in the DAG's time zone), so scheduled runs and backfills each query exactly their days; with a
    Parquet dataset partitioned by ``StudyDate`` a rerun replaces exactly those days (days that now have
    no match are cleared), so backfills are idempotent. Use ``CronDataIntervalTimetable`` for day-long
    intervals (``@daily`` with the default ``CronTriggerTimetable`` gives a zero-length interval, which
    this operator reads as the single day of its start).

    Truncated queries are split (halves of the date range, then StudyTime ranges); a piece that cannot be
    split fails the task with the interval, the node and what to do. Nothing is written unless the whole
    result is complete.

    :param dicom_conn_id: connection of type ``dicom`` (C-FIND) or ``dicomweb`` (QIDO-RS, the same rows)
        (templated).
    :param level: ``PATIENT``, ``STUDY`` (default), ``SERIES`` or ``IMAGE`` (templated).
    :param return_keys: DICOM keywords to return (templated); default: a level-specific set
        (:data:`~airflow_dicom.dimse.query.DEFAULT_RETURN_KEYS`). Unknown keywords fail the task before
        any association is opened. Keys the node does not return are landed as nulls.
    :param matching_keys: keyword -> value (wildcards, ranges, lists) (templated).
    :param modality: modality filter, e.g. ``"CT"`` or ``["CT", "MR"]`` (templated); ``ModalitiesInStudy``
        at STUDY level, ``Modality`` below.
    :param date_from: first study date (templated; default: the data interval's start date).
    :param date_to: last study date, inclusive (templated; default: the last day before the interval end).
    :param output_path: Parquet dataset directory or CSV file: local path, fsspec URL or
        ``ObjectStoragePath`` (templated, e.g. ``s3://lake/pacs/studies`` or ``/data/find/{{ ds }}.csv``).
    :param output_format: ``parquet`` (default), ``csv`` or ``sql`` (templated).
    :param sql_conn_id: for ``sql``: an Airflow SQL connection whose hook offers ``get_sqlalchemy_engine``.
    :param sql_url: for ``sql``: a SQLAlchemy URL instead of ``sql_conn_id`` (templated).
    :param sql_table: for ``sql``: the table name (templated).
    :param max_results_per_query: for nodes that truncate silently: that many matches count as truncation.
    :param query_model: ``patient`` or ``study`` to override the information model.
    :param modality_match: ``local`` (default) or ``node`` (templated)
        (see :func:`~airflow_dicom.dimse.query.build_query`).
    :param calling_ae_title: calling AE title overriding the connection's (templated).
    :param asset: an :class:`~airflow.sdk.Asset` (or URI) for the output: added to ``outlets`` so each
        successful run emits an asset event, whose ``extra`` carries the summary below.
    :return: a small summary pushed to XCom (never the rows), with the keys ``rows`` (rows landed),
        ``path``, ``format``, ``level``, ``node``, ``interval_start`` and ``interval_end`` (ISO dates, both
        inclusive), ``queries`` (C-FIND requests sent), ``splits`` (truncated queries split),
        ``truncated_queries``, ``associations``, ``days_written``, ``days_cleared`` (days of the interval
        whose stale partition was deleted), ``rows_replaced`` (SQL), ``rows_outside_interval`` and
        ``seconds``.
    """

    template_fields: Sequence[str] = (
        "dicom_conn_id",
        "level",
        "return_keys",
        "matching_keys",
        "modality",
        "modality_match",
        "date_from",
        "date_to",
        "output_path",
        "output_format",
        "sql_url",
        "sql_table",
        "calling_ae_title",
    )
    template_fields_renderers = {"matching_keys": "json"}
    ui_color = "#cfe8ff"

    def __init__(
        self,
        *,
        dicom_conn_id: str = DicomHook.default_conn_name,
        level: str = "STUDY",
        return_keys: Sequence[str] | None = None,
        matching_keys: Mapping[str, Any] | None = None,
        modality: str | Sequence[str] | None = None,
        date_from: str | date | None = None,
        date_to: str | date | None = None,
        output_path: Any = None,
        output_format: str = "parquet",
        sql_conn_id: str | None = None,
        sql_url: str | None = None,
        sql_table: str | None = None,
        max_results_per_query: int | None = None,
        query_model: str | None = None,
        modality_match: str = "local",
        calling_ae_title: str | None = None,
        asset: Asset | str | None = None,
        **kwargs: Any,
    ) -> None:
        if asset is not None:
            asset = asset if isinstance(asset, Asset) else Asset(str(asset))
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), asset]
        super().__init__(**kwargs)
        self.dicom_conn_id = dicom_conn_id
        self.level = level
        self.return_keys = return_keys
        self.matching_keys = matching_keys
        self.modality = modality
        self.date_from = date_from
        self.date_to = date_to
        self.output_path = output_path
        self.output_format = output_format
        self.sql_conn_id = sql_conn_id
        self.sql_url = sql_url
        self.sql_table = sql_table
        self.max_results_per_query = max_results_per_query
        self.query_model = query_model
        self.modality_match = modality_match
        self.calling_ae_title = calling_ae_title
        self.asset = asset

    def _interval(self, context: Any) -> tuple[Any, Any]:
        """The study dates: the operator's own, else the run's data interval in the DAG's time zone."""
        if self.date_from or self.date_to:
            return self.date_from or None, self.date_to or None
        start = context.get("data_interval_start")
        end = context.get("data_interval_end")
        if start is None or end is None:
            raise InvalidRequestError(
                "this run has no data interval (e.g. triggered without a logical date): give "
                "date_from/date_to, or run the DAG on a data-interval timetable"
            )
        tz = getattr(context.get("dag"), "timezone", None)
        if tz is not None:
            start, end = start.in_timezone(tz), end.in_timezone(tz)
        first: date = start.date()
        last: date = (end - timedelta(microseconds=1)).date() if end > start else first
        return first, max(first, last)

    def _sql_target(self) -> Any:
        if self.sql_url:
            return self.sql_url
        if self.sql_conn_id:
            hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
            return hook.get_sqlalchemy_engine()
        raise InvalidRequestError("output_format 'sql' needs sql_url or sql_conn_id, and sql_table")

    def execute(self, context: Any) -> dict[str, Any]:
        level = str(self.level).upper()
        date_from, date_to = self._interval(context)
        return_keys = self.return_keys
        if return_keys is None:
            return_keys = DEFAULT_RETURN_KEYS.get(level, ())
        query = build_query(  # validation (unknown keywords...) happens here, before any association
            level,
            return_keys=return_keys,
            matching=self.matching_keys,
            date_from=_parse(date_from),
            date_to=_parse(date_to),
            modality=self.modality or None,
            model=self.query_model,
            modality_match=self.modality_match,
        )
        output_format = str(self.output_format).lower()
        if output_format not in FORMATS:
            raise InvalidRequestError(
                f"output_format {self.output_format!r} is not one of {', '.join(FORMATS)}"
            )
        if output_format == "sql":
            output: Any = self._sql_target()
        elif not self.output_path:
            raise InvalidRequestError(f"output_path is required for the {output_format} format")
        else:
            output = self.output_path
        overrides = {"calling_ae_title": self.calling_ae_title} if self.calling_ae_title else {}
        hook = node_hook(self.dicom_conn_id, **overrides)  # dicom: C-FIND; dicomweb: QIDO-RS
        self.log.info("find %s on %s", query.describe(), hook.node.describe())
        landing = hook.find_and_land(
            query,
            output,
            output_format=output_format,
            max_results_per_query=self.max_results_per_query,
            sql_table=self.sql_table,
        )
        summary = landing.summary()
        self.log.info(
            "%d rows landed at %s (%s..%s): %d queries, %d splits, %d days written, %d days cleared",
            summary["rows"],
            summary["path"],
            summary["interval_start"],
            summary["interval_end"],
            summary["queries"],
            summary["splits"],
            summary["days_written"],
            summary["days_cleared"],
        )
        if self.asset is not None:
            context["outlet_events"][self.asset].extra = dict(summary)
        return summary


def _parse(value: Any) -> Any:
    """Rendered templates are strings; datetimes from Python DAGs are kept."""
    if isinstance(value, datetime):
        return value.date()
    return value
