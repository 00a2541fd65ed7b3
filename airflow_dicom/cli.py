"""The ``airflow-dicom`` command line: DICOM operations without an Airflow scheduler or database.

Airflow is imported only when a node is given with ``--conn-id`` (importing Airflow costs ~1.6 s;
``airflow-dicom echo --host ...`` answers well under a second).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence

from airflow_dicom import commands
from airflow_dicom.dimse.errors import DicomError
from airflow_dicom.dimse.node import DEFAULT_CALLING_AE_TITLE, DicomNode

Command = Callable[[argparse.Namespace], int]
_SETUPS: list[tuple[str, str, Callable[[argparse.ArgumentParser], Command], tuple[str, ...]]] = []


class CliError(Exception):
    """A usage error reported as one line with exit status 2."""


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the NODE options shared by every subcommand: ``--conn-id`` or ``--host/--port/--aet``.

    :param parser: the subcommand's parser.
    """
    group = parser.add_argument_group(
        "NODE", "the remote DICOM node: either --conn-id, or --host, --port and --aet, or --url (DICOMweb)"
    )
    group.add_argument(
        "--conn-id",
        help="an Airflow connection of type dicom or dicomweb (env vars AIRFLOW_CONN_* included)",
    )
    group.add_argument("--url", help="a DICOMweb base URL, e.g. http://pacs:8042/dicom-web (find, get, send)")
    group.add_argument("--host", help="host name or IP address of the node")
    group.add_argument("--port", type=int, help="TCP port of the node")
    group.add_argument("--aet", dest="called_aet", help="the node's AE title (called AE title)")
    group.add_argument(
        "--calling-aet", help=f"our AE title (default: the connection's, else {DEFAULT_CALLING_AE_TITLE})"
    )
    group.add_argument("--timeout", type=float, help="ACSE/DIMSE/network timeout in seconds for this run")
    tls = parser.add_argument_group("TLS", "DICOM over TLS with the node (overrides the connection)")
    tls.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    tls.add_argument("--tls-ca", metavar="CA", help="CA bundle (PEM) to verify the node's certificate")
    tls.add_argument("--tls-cert", metavar="CERT", help="our client certificate (PEM), for mutual TLS")
    tls.add_argument("--tls-key", metavar="KEY", help="the private key (PEM file) of --tls-cert")
    tls.add_argument(
        "--tls-no-verify-hostname",
        action="store_true",
        help="do not check that the node's certificate names --host (the CA is still checked)",
    )
    tls.add_argument("--tls-min-version", choices=["1.2", "1.3"], help="minimum TLS version (default 1.2)")


def node_from_args(args: argparse.Namespace, *, web: bool = False) -> DicomNode:
    """Build the :class:`DicomNode` described by the NODE options.

    :param args: parsed arguments of a subcommand that called :func:`add_node_arguments`.
    :param web: the subcommand also works on DICOMweb nodes (``--url``, a ``dicomweb`` connection): then a
        :class:`~airflow_dicom.dicomweb.node.DicomWebNode` may be returned.
    :raises CliError: neither or both ways of naming a node were used.
    """
    web_node = _web_node_from_args(args)
    if web_node is not None:
        if not web:
            raise CliError(f"{web_node.describe()} is a DICOMweb node: DICOMweb serves find, get and send")
        return web_node  # type: ignore[return-value]
    overrides: dict[str, object] = {}
    if args.calling_aet:
        overrides["calling_ae_title"] = args.calling_aet
    if args.timeout:
        overrides.update(acse_timeout=args.timeout, dimse_timeout=args.timeout, network_timeout=args.timeout)
    overrides.update(_tls_overrides(args))
    if args.conn_id:
        if args.host or args.port or args.called_aet:
            raise CliError("give either --conn-id or --host/--port/--aet, not both")
        from airflow_dicom.hooks.dicom import DicomHook  # imports Airflow: only on this path

        try:
            node = DicomHook(args.conn_id).node
        except DicomError:
            raise
        except Exception as exc:  # AirflowNotFoundException and friends: one line, not a traceback
            raise CliError(f"connection {args.conn_id!r}: {exc}") from exc
        return node.with_changes(**overrides) if overrides else node
    missing = [
        opt
        for opt, value in (("--host", args.host), ("--port", args.port), ("--aet", args.called_aet))
        if not value
    ]
    if missing:
        raise CliError(
            f"no node given: use --conn-id, or all of --host, --port and --aet (missing {', '.join(missing)})"
        )
    return DicomNode(host=args.host, port=args.port, called_ae_title=args.called_aet, **overrides)  # type: ignore[arg-type]


def _tls_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Node settings from the TLS options (any TLS option but ``--tls`` itself implies ``--tls``)."""
    values: dict[str, object] = {}
    for option, name in (
        ("tls_ca", "tls_ca_file"),
        ("tls_cert", "tls_cert_file"),
        ("tls_key", "tls_key"),
        ("tls_min_version", "tls_min_version"),
    ):
        if getattr(args, option, None):
            values[name] = getattr(args, option)
    if getattr(args, "tls_no_verify_hostname", False):
        values["tls_verify_hostname"] = False
    if getattr(args, "tls", None) or values:
        values["tls"] = True
    if values.get("tls_key") and not values.get("tls_cert_file"):
        raise CliError("--tls-key needs --tls-cert (the certificate of that key)")
    return values


def _web_node_from_args(args: argparse.Namespace) -> object | None:
    """The DICOMweb node of ``--url`` or of a ``dicomweb`` ``--conn-id``, else None."""
    url = getattr(args, "url", None)
    if url:
        if args.conn_id or args.host or args.port or args.called_aet:
            raise CliError("give either --url, --conn-id or --host/--port/--aet, not several")
        from airflow_dicom.dicomweb.node import DicomWebNode

        return DicomWebNode(url=url, read_timeout=args.timeout or 120.0)
    if not args.conn_id:
        return None
    from airflow.sdk import BaseHook  # imports Airflow: only with --conn-id

    try:
        kind = str(BaseHook.get_connection(args.conn_id).conn_type or "")
    except Exception as exc:  # AirflowNotFoundException and friends: one line, not a traceback
        raise CliError(f"connection {args.conn_id!r}: {exc}") from exc
    if kind != "dicomweb":
        return None
    from airflow_dicom.hooks.dicomweb import DicomWebHook

    return DicomWebHook(args.conn_id).node


def command(
    name: str, help_text: str, *, imports: Sequence[str] = ()
) -> Callable[[Callable[[argparse.ArgumentParser], Command]], None]:
    """Register a subcommand: the decorated function adds its arguments and returns its runner.

    :param name: the subcommand's name.
    :param help_text: one line for ``--help``.
    :param imports: the modules its runner imports when it runs (the DICOM stack): the console script imports
        them just before, with the garbage collector paused (see :func:`console`).
    """

    def register(setup: Callable[[argparse.ArgumentParser], Command]) -> None:
        _SETUPS.append((name, help_text, setup, tuple(imports)))

    return register


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser with every registered subcommand."""
    _load_subcommands()
    parser = argparse.ArgumentParser(
        prog="airflow-dicom",
        description="DICOM networking from the command line, with the same code as the Airflow provider. "
        "Exit status: 0 success, 1 DICOM failure (message on stderr), 2 usage error.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, setup, imports in _SETUPS:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(run=setup(sub_parser), imports=imports)
    return parser


def _load_subcommands() -> None:
    """Import every module of :mod:`airflow_dicom.commands`; each registers its subcommand(s)."""
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"{commands.__name__}.{info.name}")


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run one ``airflow-dicom`` command.

    :param argv: arguments (default: ``sys.argv[1:]``).
    :param own_process: the process exits after this call (:func:`console`): keep the garbage collector off
        the modules the command imports. Leave it False when embedding (tests call ``main([...])``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        if own_process:
            _import_uncollected(args.imports)
        return args.run(args)
    except CliError as exc:
        print(f"airflow-dicom {args.command}: {exc}", file=sys.stderr)
        return 2
    except DicomError as exc:
        print(f"airflow-dicom {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"airflow-dicom {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if own_process:
            gc.freeze()  # the interpreter's last collection at exit skips what the run leaves alive


def _import_uncollected(modules: Sequence[str]) -> None:
    """Import ``modules`` with the garbage collector paused, then freeze what exists (:func:`gc.freeze`).

    :param modules: module names.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()  # module objects live until exit: later collections need not walk them
        if enabled:
            gc.enable()


def console() -> int:
    """Entry point of the ``airflow-dicom`` console script and of ``python -m airflow_dicom``.

    :func:`main` in a process of its own, with the garbage collector kept off what lives until the process
    exits. Importing a network command's stack (pydicom, pynetdicom, the provider's DICOM modules: some
    40,000 objects) triggers ~150 collections that find nothing to free, and the interpreter's last collection
    at exit walks them all again: together 100-150 ms of a ~0.5 s command on a 2-core host. So the command's
    modules (``imports`` of :func:`command`) are imported with collection paused and then frozen, and
    everything is frozen before the interpreter exits; while the command runs, collection goes on as usual.
    """
    return main(own_process=True)


if __name__ == "__main__":
    # run the importable module, not this __main__ copy: the subcommands register with airflow_dicom.cli
    from airflow_dicom.cli import console as _console

    sys.exit(_console())
