"""``airflow-dicom send NODE PATH... [--parallel N]``: send DICOM files to a node (C-STORE)."""

from __future__ import annotations

import argparse
import json
import sys

from airflow_dicom.cli import CliError, Command, add_node_arguments, command, node_from_args


@command(
    "send",
    "send DICOM files, directories and globs to a node (C-STORE); lists every failure",
    imports=("airflow_dicom.dimse.send",),
)
def setup(parser: argparse.ArgumentParser) -> Command:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files, directories (recursive), globs")
    add_node_arguments(parser)
    parser.add_argument("--parallel", type=int, default=2, help="associations at once (default 2)")
    parser.add_argument(
        "--transcode",
        action="store_true",
        help="send compressed files uncompressed when the node refuses their transfer syntax",
    )
    parser.add_argument(
        "--max-failed", type=int, default=0, help="failed files tolerated before exiting 1 (default 0)"
    )
    parser.add_argument("--retries", type=int, default=1, help="re-sends of a file whose response was lost")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.node import DicomNode
        from airflow_dicom.dimse.send import send, transcoding

        if args.max_failed < 0:
            raise CliError("--max-failed must be 0 or more")
        node = node_from_args(args, web=True)
        web = not isinstance(node, DicomNode)  # the DICOMweb client (requests, numpy) only imported for --url
        if web:  # STOW-RS: files as they are, account from the answer
            from airflow_dicom.dicomweb.stow import stow_send

            report = stow_send(node, args.paths, parallel=args.parallel)
        else:
            report = send(
                node, args.paths, parallel=args.parallel, transcode=args.transcode, retries=args.retries
            )
        summary = report.summary(max_listed=10_000)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(
                f"{'STOW-RS' if web else 'C-STORE'} {summary['node']}: "
                f"{summary['files']} files, {summary['sent']} sent, "
                f"{summary['warning']} warning, {summary['failed']} failed, {summary['skipped']} skipped "
                f"(not DICOM), {summary['retried']} retried, {summary['transcoded']} transcoded; "
                f"{summary['bytes'] / 1e6:.1f} MB in "
                f"{summary['seconds']:.2f} s"
            )
            for result in report.warnings:
                print(f"warning: {result.path}: {result.reason}")
            for result in report.skipped:
                print(f"skipped: {result.path}: {result.reason}")
            for result in report.transcoded:
                print(f"transcoded: {result.path}: {transcoding(result)}")
        for result in report.failed:
            print(f"failed: {result.path}: {result.reason}", file=sys.stderr)
        return 1 if len(report.failed) > args.max_failed else 0

    return run
