"""``airflow-dicom storescp``: the long-running receiver (Storage SCP) service.

Logs one line per association (calling AE, counts, bytes, seconds; never patient data). SIGTERM or
SIGINT stops accepting associations, lets in-flight ones finish (``--grace`` seconds) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from airflow_dicom.cli import CliError, Command, command


@command("storescp", "run a receiver (Storage SCP) writing what it receives under a data directory")
def setup(parser: argparse.ArgumentParser) -> Command:
    parser.add_argument("--aet", required=True, help="our AE title")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--data-dir", required=True, help="directory where instances are stored")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all interfaces)")
    parser.add_argument(
        "--layout",
        choices=["patient", "study", "flat"],
        default="patient",
        help="patient: <PatientID>/<Study>/<Series>/<SOP>.dcm (default); study: <Study>/<Series>/<SOP>.dcm; "
        "flat: <SOP>.dcm",
    )
    parser.add_argument(
        "--allow-aet",
        action="append",
        default=[],
        metavar="AET",
        help="accept associations only from this calling AE title (repeatable; default: any)",
    )
    parser.add_argument("--max-associations", type=int, default=10, help="concurrent associations at most")
    parser.add_argument(
        "--fsync", action="store_true", help="fsync every file before it is renamed into place"
    )
    parser.add_argument("--timeout", type=float, default=60, help="DIMSE and network timeout in seconds")
    parser.add_argument(
        "--grace", type=float, default=60, help="seconds in-flight associations get to finish on SIGTERM"
    )
    limits = parser.add_argument_group("LIMITS", "what one client may hold (refusals are logged and counted)")
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=10,
        help="seconds a new connection gets for its TLS handshake and association request (default 10)",
    )
    limits.add_argument("--max-per-peer", type=int, help="connections at most from one peer address")
    limits.add_argument(
        "--max-pending", type=int, default=64, help="connections at most still waiting to associate"
    )
    limits.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept connections only from this network, e.g. 10.0.0.0/8 (repeatable; default: any)",
    )
    tls = parser.add_argument_group("TLS", "serve DICOM over TLS (PS3.15 Annex B)")
    tls.add_argument("--tls-cert", metavar="CERT", help="our certificate (PEM); turns TLS on")
    tls.add_argument("--tls-key", metavar="KEY", help="its private key (PEM file)")
    tls.add_argument("--tls-ca", metavar="CA", help="CA bundle to verify client certificates with")
    tls.add_argument(
        "--tls-require-client-cert",
        action="store_true",
        help="mutual TLS: refuse clients without a certificate",
    )
    tls.add_argument("--tls-min-version", choices=["1.2", "1.3"], help="minimum TLS version (default 1.2)")

    parser.add_argument(
        "--pseudonymize-key-file",
        metavar="KEY",
        help="store only pseudonymised instances (PS3.15 E.1-1, keyed with this key file); nothing in clear "
        "reaches the disk, refused instances are not quarantined",
    )
    parser.add_argument(
        "--profile-option", action="append", default=[], metavar="OPTION", help="see `pseudonymize --help`"
    )

    def run(args: argparse.Namespace) -> int:
        # imported when the command runs (see airflow_dicom.commands)
        from airflow_dicom.dimse.receiver import Receiver
        from airflow_dicom.dimse.tls import ServerTls, TlsConfigError

        if not 0 < args.port < 65536:
            raise CliError(f"--port {args.port} is not a TCP port")
        if args.max_associations < 1:
            raise CliError("--max-associations must be at least 1")
        if not args.aet or len(args.aet) > 16:
            raise CliError("--aet must be 1 to 16 characters")
        if (args.tls_key or args.tls_ca or args.tls_require_client_cert) and not args.tls_cert:
            raise CliError("--tls-key, --tls-ca and --tls-require-client-cert need --tls-cert")
        tls = None
        if args.tls_cert:
            tls = ServerTls(
                cert_file=args.tls_cert,
                key=args.tls_key,
                ca_file=args.tls_ca,
                require_client_cert=args.tls_require_client_cert,
                min_version=args.tls_min_version,
            )
        # the per-association lines are this command's output: INFO for our logger even without -v
        logging.getLogger("airflow_dicom.dimse.receiver").setLevel(logging.INFO)
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        transform = None
        if args.pseudonymize_key_file:
            from airflow_dicom.deid.instance import InstanceRewriter
            from airflow_dicom.deid.keys import PseudonymKey
            from airflow_dicom.deid.options import ProfileOptions

            try:
                options = ProfileOptions.from_names(args.profile_option)
            except ValueError as exc:
                raise CliError(str(exc)) from exc
            key = PseudonymKey.from_file(args.pseudonymize_key_file)
            transform = InstanceRewriter(key, options, keep_rows=False).rewrite_dataset
        try:
            receiver = Receiver(
                args.data_dir,
                ae_title=args.aet,
                host=args.host,
                port=args.port,
                layout=args.layout,
                allowed_aets=args.allow_aet or None,
                max_associations=args.max_associations,
                fsync=args.fsync,
                dimse_timeout=args.timeout,
                network_timeout=args.timeout,
                tls=tls,
                idle_timeout=args.idle_timeout,
                max_per_peer=args.max_per_peer,
                max_pending=args.max_pending,
                allowed_networks=args.allow_network,
                transform=transform,
            )
            receiver.start()
        except (TlsConfigError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:
            print(f"airflow-dicom storescp: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1

        def stop(signum: int, frame: Any) -> None:
            receiver.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        receiver.serve_forever(grace=args.grace)
        return 0

    return run
