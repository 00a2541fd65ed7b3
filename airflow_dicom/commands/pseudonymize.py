"""``airflow-dicom pseudonymize SRC... --out DIR --key-file KEY``: PS3.15 E.1-1 pseudonymisation."""

from __future__ import annotations

import argparse
import json

from airflow_dicom.cli import CliError, Command, command


@command(
    "pseudonymize",
    "pseudonymise DICOM files, directories or arrival manifests into a new data directory (PS3.15 E.1-1, "
    "keyed deterministic UIDs and pseudonyms)",
)
def setup(parser: argparse.ArgumentParser) -> Command:
    parser.add_argument(
        "sources", nargs="+", metavar="SRC", help="DICOM files, directories or manifest .json"
    )
    parser.add_argument("--out", required=True, help="output data directory (created; not inside a SRC)")
    parser.add_argument("--key-file", required=True, help="file holding the secret key (>= 16 bytes)")
    parser.add_argument("--mapping", help="Parquet file for the original -> pseudonym mapping (identifying!)")
    parser.add_argument(
        "--profile-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="clean-descriptors, patient-characteristics, device-identity, no-modified-dates (repeatable)",
    )
    parser.add_argument(
        "--keep-private",
        action="append",
        default=[],
        metavar="CREATOR:EE",
        help="safe-listed private element",
    )
    parser.add_argument(
        "--include-burned-in", action="store_true", help="also write instances that may carry burned-in text"
    )
    parser.add_argument(
        "--layout", default="study", choices=["patient", "study", "flat"], help="output layout"
    )

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.deid.keys import PseudonymKey
        from airflow_dicom.deid.options import ProfileOptions
        from airflow_dicom.deid.pipeline import PseudonymisationError, Pseudonymiser

        try:
            options = ProfileOptions.from_names(
                args.profile_option, args.keep_private, args.include_burned_in
            )
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        key = PseudonymKey.from_file(args.key_file)
        try:
            summary = Pseudonymiser(key, args.out, options, layout=args.layout, mapping=args.mapping).run(
                args.sources
            )
        except PseudonymisationError as exc:
            raise CliError(str(exc)) from exc
        print(json.dumps(summary.as_dict(), indent=1))
        return 1 if summary.failed else 0

    return run
