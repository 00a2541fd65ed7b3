"""``airflow-dicom echo NODE``: verify a node answers (C-ECHO)."""

from __future__ import annotations

import argparse

from airflow_dicom.cli import Command, add_node_arguments, command, node_from_args


@command(
    "echo",
    "verify a node answers (C-ECHO); prints the round-trip time",
    imports=("airflow_dicom.dimse.echo",),
)
def setup(parser: argparse.ArgumentParser) -> Command:
    add_node_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.echo import echo

        result = echo(node_from_args(args))
        print(
            f"C-ECHO {result.node.describe()}: ok, round trip {result.round_trip * 1e3:.1f} ms "
            f"(with association {result.total * 1e3:.1f} ms)"
        )
        return 0

    return run
