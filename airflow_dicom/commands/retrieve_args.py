"""Options and the runner shared by ``airflow-dicom move`` and ``airflow-dicom get`` (registers nothing)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from airflow_dicom.cli import CliError, add_node_arguments


def add_retrieve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add NODE, the items (UIDs or ``--from-parquet``) and the throttling/resume options.

    :param parser: the subcommand's parser.
    """
    add_node_arguments(parser)
    items = parser.add_argument_group("ITEMS", "UIDs on the command line, or the find results")
    items.add_argument(
        "uids", nargs="*", metavar="UID", help="UIDs to retrieve (PatientIDs at PATIENT level)"
    )
    items.add_argument(
        "--level", default="STUDY", type=str.upper, choices=["PATIENT", "STUDY", "SERIES", "IMAGE"]
    )
    items.add_argument("--from-parquet", metavar="PATH", help="the find results dataset (DicomFindOperator)")
    items.add_argument(
        "--filter",
        metavar="EXPR",
        help="pandas query on the find results, e.g. \"ModalitiesInStudy == 'CT'\"",
    )
    tuning = parser.add_argument_group("RETRIEVAL")
    tuning.add_argument("--parallel", type=int, default=2, help="associations at once (default 2)")
    tuning.add_argument("--time-budget", type=float, help="seconds per request before C-CANCEL")
    tuning.add_argument("--max-attempts", type=int, default=3, help="tries per item for transient failures")
    tuning.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry")
    tuning.add_argument("--pause", type=float, default=0.0, help="seconds between requests on an association")
    tuning.add_argument(
        "--report", metavar="DIR", help="retrieval report dataset (default <data-dir>/.reports/retrieval)"
    )
    tuning.add_argument(
        "--run-id", default=None, help="label stamped on the report rows (default: cli-<time>)"
    )
    tuning.add_argument("--quiet", action="store_true", help="no progress line per item")


def items_from_args(args: argparse.Namespace) -> list[Any]:
    """The items named by the ITEMS options.

    :param args: parsed arguments.
    :raises CliError: neither or both of UIDs and --from-parquet.
    """
    # imported when the command runs (see airflow_dicom.commands)
    from airflow_dicom.dimse.retrieve import make_items

    if args.uids and args.from_parquet:
        raise CliError("give UIDs or --from-parquet, not both")
    if args.from_parquet:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.landing.retrieve_items import items_from_parquet

        return items_from_parquet(args.from_parquet, args.level, args.filter)
    if args.filter:
        raise CliError("--filter applies to --from-parquet")
    if not args.uids:
        raise CliError("nothing to retrieve: give UIDs or --from-parquet PATH")
    return make_items(args.uids, args.level)


def run_retrieval(args: argparse.Namespace, node: Any, **retrieve_kwargs: Any) -> int:
    """Retrieve, print a line per item and a summary; exit status 1 if anything is incomplete.

    :param args: parsed arguments.
    :param node: the PACS.
    :param retrieve_kwargs: ``service`` and the destination / data directory for :func:`retrieve`, and
        optionally ``retriever``, a function used instead of :func:`retrieve` (same arguments).
    """
    # imported when the command runs (see airflow_dicom.commands)
    from airflow_dicom.dimse.retrieve import RetrieveOptions, retrieve
    from airflow_dicom.landing.report import ReportWriter, completed_items

    items = items_from_args(args)
    options = RetrieveOptions(
        parallel=args.parallel,
        time_budget=args.time_budget,
        max_attempts=args.max_attempts,
        backoff=args.backoff,
        pause=args.pause,
    )
    data_dir = getattr(args, "data_dir", None)
    report = args.report or (f"{str(data_dir).rstrip('/')}/.reports/retrieval" if data_dir else None)
    completed = completed_items(report) if report else {}
    run_id = args.run_id or "cli-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")

    with ReportWriter(report, run_id) as writer:

        def on_attempt(attempt: Any) -> None:
            writer.add(attempt.row())
            if not args.quiet:
                print(attempt.progress_line(), flush=True)

        retriever = retrieve_kwargs.pop("retriever", retrieve)
        result = retriever(
            node, items, options=options, completed=completed, on_attempt=on_attempt, **retrieve_kwargs
        )
    summary = result.summary()
    print(
        f"{retrieve_kwargs['service']}: {summary['requested']} requested, {summary['complete']} complete, "
        f"{summary['skipped']} already complete, {summary['failed']} failed, {summary['instances']} instances"
        + (f", report {report}" if report else "")
    )
    if not result.ok:
        print(f"{len(summary['failures'])} item(s) not complete:", file=sys.stderr)
        for uid, reason in summary["failures"].items():
            print(f"  {uid}: {reason}", file=sys.stderr)
        return 1
    return 0
