"""``airflow-dicom move NODE --dest-aet AET UID...``: C-MOVE studies (or patients, series, images)."""

from __future__ import annotations

import argparse

from airflow_dicom.cli import CliError, Command, command, node_from_args
from airflow_dicom.commands.retrieve_args import add_retrieve_arguments, run_retrieval


@command(
    "move",
    "C-MOVE items to a destination; exit 1 unless every item is complete",
    imports=("airflow_dicom.dimse.retrieve", "airflow_dicom.dimse.tls", "airflow_dicom.landing.report"),
)
def setup(parser: argparse.ArgumentParser) -> Command:
    add_retrieve_arguments(parser)
    dest = parser.add_argument_group(
        "DESTINATION",
        "--receive-port: start our receiver for this run (C-MOVE to ourselves); --data-dir alone: our "
        "receiver service writes there (arrivals are cross-checked); neither: a third node",
    )
    dest.add_argument("--dest-aet", help="the move destination AE title (default with --receive-port: ours)")
    dest.add_argument("--receive-port", type=int, help="start our receiver on this port for the run")
    dest.add_argument("--receive-host", default="0.0.0.0", help="address our receiver listens on")
    dest.add_argument(
        "--receiver-process",
        choices=["auto", "yes", "no"],
        default="auto",
        help="run the receiver started with --receive-port in a process of its own (auto: from 100 items on "
        "a host with two cores or more)",
    )
    dest.add_argument("--data-dir", help="where our receiver stores (embedded or service)")
    dest.add_argument("--layout", default="patient", choices=["patient", "study", "flat"])

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.retrieve import MOVE, MoveDestination
        from airflow_dicom.dimse.tls import embedded_receiver_tls

        node = node_from_args(args)
        if args.receive_port is not None and not args.data_dir:
            raise CliError("--receive-port needs --data-dir (where the receiver stores)")
        dest_aet = args.dest_aet or (node.calling_ae_title if args.receive_port is not None else None)
        if not dest_aet:
            raise CliError("--dest-aet is required unless our receiver is started with --receive-port")
        destination = MoveDestination(
            ae_title=dest_aet,
            data_dir=args.data_dir,
            port=args.receive_port,
            host=args.receive_host,
            layout=args.layout,
            tls=embedded_receiver_tls(node) if args.receive_port is not None else None,
            receiver_process={"auto": None, "yes": True, "no": False}[args.receiver_process],
        )
        return run_retrieval(args, node, service=MOVE, destination=destination)

    return run
