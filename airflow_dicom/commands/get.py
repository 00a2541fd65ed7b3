"""``airflow-dicom get NODE --data-dir DIR UID...``: C-GET studies (or patients, series, images)."""

from __future__ import annotations

import argparse

from airflow_dicom.cli import Command, command, node_from_args
from airflow_dicom.commands.retrieve_args import add_retrieve_arguments, run_retrieval


@command("get", "C-GET items into a data directory; exit 1 unless every item is complete")
def setup(parser: argparse.ArgumentParser) -> Command:
    add_retrieve_arguments(parser)
    parser.add_argument("--data-dir", required=True, help="where the instances are stored")
    parser.add_argument("--layout", default="patient", choices=["patient", "study", "flat"])

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.retrieve import GET

        return run_retrieval(
            args, node_from_args(args), service=GET, data_dir=args.data_dir, layout=args.layout
        )

    return run
