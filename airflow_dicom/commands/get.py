"""``airflow-dicom get NODE --data-dir DIR UID...``: C-GET studies (or patients, series, images)."""

from __future__ import annotations

import argparse

from airflow_dicom.cli import Command, command, node_from_args
from airflow_dicom.commands.retrieve_args import add_retrieve_arguments, run_retrieval


@command(
    "get",
    "C-GET (or WADO-RS) items into a data directory; exit 1 unless every item is complete",
    imports=("airflow_dicom.dimse.retrieve", "airflow_dicom.landing.report"),
)
def setup(parser: argparse.ArgumentParser) -> Command:
    add_retrieve_arguments(parser)
    parser.add_argument("--data-dir", required=True, help="where the instances are stored")
    parser.add_argument("--layout", default="patient", choices=["patient", "study", "flat"])

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.node import DicomNode
        from airflow_dicom.dimse.retrieve import GET

        node = node_from_args(args, web=True)
        if not isinstance(node, DicomNode):  # WADO-RS (--url), streamed into the same store core
            from airflow_dicom.dicomweb.wado import WADO, wado_retrieve

            def retriever(node, items, *, service, data_dir, **kwargs):  # type: ignore[no-untyped-def]
                return wado_retrieve(node, items, data_dir, **kwargs)

            return run_retrieval(
                args, node, service=WADO, retriever=retriever, data_dir=args.data_dir, layout=args.layout
            )
        return run_retrieval(args, node, service=GET, data_dir=args.data_dir, layout=args.layout)

    return run
