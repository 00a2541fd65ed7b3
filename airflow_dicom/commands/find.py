"""``airflow-dicom find NODE``: C-FIND a node for a study-date range and write Parquet, CSV or SQL."""

from __future__ import annotations

import argparse

from airflow_dicom.cli import CliError, Command, add_node_arguments, command, node_from_args


def _key_value(text: str) -> tuple[str, str]:
    keyword, sep, value = text.partition("=")
    if not sep or not keyword.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEYWORD=VALUE")
    return keyword.strip(), value


@command(
    "find",
    "C-FIND (or QIDO-RS) a node, split on truncation, and write Parquet, CSV or SQL",
    imports=("airflow_dicom.dimse.query.walk", "airflow_dicom.dimse.query.background"),
)
def setup(parser: argparse.ArgumentParser) -> Command:
    add_node_arguments(parser)
    parser.add_argument(
        "--level",
        default="STUDY",
        type=str.upper,
        choices=["PATIENT", "STUDY", "SERIES", "IMAGE"],
        help="query level (default STUDY)",
    )
    parser.add_argument("--from", dest="date_from", help="first study date (YYYY-MM-DD or YYYYMMDD)")
    parser.add_argument("--to", dest="date_to", help="last study date, inclusive")
    parser.add_argument(
        "-k",
        "--key",
        dest="return_keys",
        action="append",
        metavar="KEYWORD",
        help="a return key (DICOM keyword), repeatable; default: a set for the level",
    )
    parser.add_argument(
        "-f",
        "--filter",
        dest="filters",
        action="append",
        type=_key_value,
        metavar="KEYWORD=VALUE",
        help="a matching key: wildcards (DOE*), ranges (a-b), lists (CT\\MR); repeatable",
    )
    parser.add_argument("--modality", help="modality filter, e.g. CT or CT,MR (ModalitiesInStudy at STUDY)")
    parser.add_argument("--out", required=True, help="Parquet dataset dir, CSV file, or SQLAlchemy URL (sql)")
    parser.add_argument(
        "--format", default="parquet", choices=["parquet", "csv", "sql"], help="output format"
    )
    parser.add_argument("--sql-table", help="table name for --format sql")
    parser.add_argument(
        "--max-results",
        type=int,
        help="treat this many matches as truncation (for PACS that truncate without saying so)",
    )
    parser.add_argument("--model", choices=["patient", "study"], help="override the information model")
    parser.add_argument(
        "--modality-match",
        default="local",
        choices=["local", "node"],
        help="match ModalitiesInStudy here (default; safe with result limits) or at the node",
    )

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.node import DicomNode
        from airflow_dicom.dimse.query import DEFAULT_RETURN_KEYS, FindStats, build_query
        from airflow_dicom.dimse.query.background import Prefetched
        from airflow_dicom.dimse.query.walk import find_matches

        if args.format == "sql" and not args.sql_table:
            raise CliError("--format sql needs --sql-table")
        query = build_query(  # unknown keywords fail here, before any network traffic
            args.level,
            return_keys=args.return_keys or DEFAULT_RETURN_KEYS[args.level],
            matching=dict(args.filters or []),
            date_from=args.date_from,
            date_to=args.date_to,
            modality=args.modality,
            model=args.model,
            modality_match=args.modality_match,
        )
        node = node_from_args(args, web=True)  # a DICOMweb node is queried over QIDO-RS (same rows)
        stats = FindStats()
        walk = None
        if isinstance(node, DicomNode):  # the walk starts now; the landing (pyarrow) is imported meanwhile
            walk = Prefetched(find_matches(node, query, max_results_per_query=args.max_results, stats=stats))
        try:
            from airflow_dicom.landing.results import find_and_land

            landing = find_and_land(
                node,
                query,
                args.out,
                output_format=args.format,
                max_results_per_query=args.max_results,
                sql_table=args.sql_table,
                matches=walk,
                stats=stats,
            )
        finally:
            if walk is not None:  # finished already, unless the landing failed: then stop it, briefly
                walk.close(timeout=10)
        interval = (
            f"{landing.interval_start}..{landing.interval_end}" if landing.interval_start else "all dates"
        )
        print(
            f"{landing.rows} rows written to {landing.path} ({query.level} level, {interval}; "
            f"{landing.stats.queries} queries, {landing.stats.splits} splits)"
        )
        return 0

    return run
