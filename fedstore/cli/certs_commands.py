"""`fedstore certs init`: a development CA and the certificates mutual TLS at the border needs.

For the demo, tests and a laptop federation; production takes certificates an operator's CA issued,
named the same way (docs/security.md, "Transport")."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fedstore.federation import FederationConfig
from fedstore.federation.config import parse_config
from fedstore.cli.arguments import path_arg, positive_int
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:
    from fedstore.cli.dev_certificates import DevPKI


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="development certificates for mutual TLS between the regions and the centre")
    cmds = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    init = cmds.add_parser("init", help="make a development CA, the centre's certificate and one per region")
    init.add_argument("--out", type=path_arg, required=True, help="directory for the PEM files")
    init.add_argument("--regions", default="", help="comma-separated region codes (default: every region in the config)")
    init.add_argument("--host", action="append", default=[],
                      help="a name or IP the clients dial the centre by (repeatable; default: localhost and 127.0.0.1)")
    init.add_argument("--days", type=positive_int, default=365, help="validity of every certificate")
    init.add_argument("--config-out", type=path_arg, default=None,
                      help="also write a copy of the federation config that names these certificates, in the config's "
                           "own directory (its relative paths stay right; the YAML comments are not copied), e.g. "
                           "fedstore-tls.yaml; then run with --config or FEDSTORE_CONFIG naming it")
    init.add_argument("--force", action="store_true", help="replace a CA already in --out (and a --config-out file)")
    init.set_defaults(handler=cmd_init)


def cmd_init(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.cli.dev_certificates import CENTRE_HOSTS, make_dev_pki

    if args.config_out is not None:  # checked before any certificate is made
        _config_out_allowed(Path(args.config), args.config_out, force=args.force)
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
    if args.config_out is not None:
        _write_config(Path(args.config), args.config_out, pki)
        print(f"\nwritten: {args.config_out}, the config with these lines (--config {args.config_out}, or "
              f"FEDSTORE_CONFIG={args.config_out})")


def _config_out_allowed(source: Path, out: Path, *, force: bool) -> None:
    if out.resolve().parent != source.resolve().parent:
        raise RegionError(f"--config-out {out}: write it in the config's directory ({source.resolve().parent}), "
                          "where the config's relative paths (data_dir, …) mean the same")
    if out.resolve() == source.resolve():
        raise RegionError(f"--config-out {out} is the config itself; name a new file, e.g. fedstore-tls.yaml")
    if out.exists() and not force:
        raise RegionError(f"--config-out {out} exists; give another name, or --force to replace it")


def _write_config(source: Path, out: Path, pki: DevPKI) -> None:
    """The source config with the certificates named (the lines printed above), checked by the
    config loader before it is written, and written whole or not at all."""
    def named(path: Path) -> str:  # absolute: the certificates stay found whatever the working directory
        return str(path.resolve())

    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    aggregator = raw.get("aggregator") or {}
    if aggregator.get("plaintext"):
        raise RegionError(f"{source}: aggregator.plaintext is true (no TLS); remove it to use certificates")
    aggregator["tls"] = {"cert": named(pki.centre.cert), "key": named(pki.centre.key), "client_ca": named(pki.ca)}
    aggregator["operator_tls"] = {"cert": named(pki.operator.cert), "key": named(pki.operator.key), "ca": named(pki.ca)}
    raw["aggregator"] = aggregator
    for region in raw.get("regions") or []:
        pair = pki.regions.get(region.get("code"))
        if pair is not None:
            region["centre_tls"] = {"cert": named(pair.cert), "key": named(pair.key), "ca": named(pki.ca)}
    text = (f"# {source.name} with the development certificates of `fedstore certs init` (not for production)\n"
            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    parse_config(yaml.safe_load(text), base_dir=source.resolve().parent, source=out)
    staged = out.with_name(f".{out.name}.tmp")
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, out)
    except OSError as e:
        staged.unlink(missing_ok=True)
        raise RegionError(f"--config-out {out}: cannot write it ({e.strerror})") from None
