"""`fedstore certs init`: a development CA and the certificates mutual TLS at the border needs.

For the demo, tests and a laptop federation; production takes certificates an operator's CA issued,
named the same way (docs/security.md, "Transport")."""

from __future__ import annotations

import argparse

from fedstore.federation import FederationConfig
from fedstore.cli.arguments import path_arg, positive_int
from fedstore.regions.errors import RegionError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="development certificates for mutual TLS between the regions and the centre")
    cmds = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    init = cmds.add_parser("init", help="make a development CA, the centre's certificate and one per region")
    init.add_argument("--out", type=path_arg, required=True, help="directory for the PEM files")
    init.add_argument("--regions", default="", help="comma-separated region codes (default: every region in the config)")
    init.add_argument("--host", action="append", default=[],
                      help="a name or IP the clients dial the centre by (repeatable; default: localhost and 127.0.0.1)")
    init.add_argument("--days", type=positive_int, default=365, help="validity of every certificate")
    init.add_argument("--force", action="store_true", help="replace a CA already in --out")
    init.set_defaults(handler=cmd_init)


def cmd_init(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.cli.dev_certificates import CENTRE_HOSTS, make_dev_pki

    codes = [config.region(c.strip()).code for c in args.regions.split(",") if c.strip()] or list(config.codes)
    if args.out.exists() and not args.out.is_dir():
        raise RegionError(f"--out {args.out} is a file: give a directory")
    if (args.out / "ca.pem").exists() and not args.force:
        raise RegionError(f"--out {args.out} holds a CA already (ca.pem); certificates it signed would stop working. "
                          "Give another directory, or --force to replace it")
    try:
        pki = make_dev_pki(args.out, codes, hosts=tuple(args.host) or CENTRE_HOSTS, days=args.days)
    except OSError as e:
        raise RegionError(f"--out {args.out}: cannot write the certificates ({e.strerror})") from None
    print(f"development CA and certificates written to {args.out} (valid {args.days} days; the keys are readable by "
          "you only). Not for production: use certificates your own CA issues, named the same way.")
    print("\nin the federation config:\n")
    print("aggregator:")
    print(f"  tls: {{cert: {pki.centre.cert}, key: {pki.centre.key}, client_ca: {pki.ca}}}")
    print(f"  operator_tls: {{cert: {pki.operator.cert}, key: {pki.operator.key}, ca: {pki.ca}}}")
    print("regions:  # in each region's entry")
    for code, pair in pki.regions.items():
        print(f"  # {code}: centre_tls: {{cert: {pair.cert}, key: {pair.key}, ca: {pki.ca}}}")
