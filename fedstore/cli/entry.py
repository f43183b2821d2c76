"""`fedstore`: one entry point, a sub-command per part of the product."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from fedstore.federation import load_config
from fedstore.cli.arguments import path_arg
from fedstore.cli.conventions import apply_conventions
from fedstore.cli.errors import USER_ERRORS, storage_problem

DEFAULT_CONFIG = "fedstore.yaml"
FAILED = 1  # the command could not be done (one line says why); 2 is argparse's: the command line was wrong


def build_parser() -> argparse.ArgumentParser:
    # here, not at the top: the commands import Feast, which takes seconds, and a Ctrl-C meanwhile
    # must land inside main() (one line, exit 130), not in the console script's import (a traceback)
    from fedstore.cli import (
        aggregator_commands,
        certs_commands,
        demo,
        deploy_commands,
        region_commands,
        registry_commands,
        retrain_commands,
        serve_commands,
        training_commands,
    )

    parser = argparse.ArgumentParser(
        prog="fedstore",
        description="Federated multi-region feature store: one Feast node per jurisdiction.",
    )
    parser.add_argument(
        "--config",
        type=path_arg,
        default=os.environ.get("FEDSTORE_CONFIG") or DEFAULT_CONFIG,  # set but empty: as unset
        help="federation config (default: $FEDSTORE_CONFIG or ./fedstore.yaml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    region_commands.add_parser(sub)
    serve_commands.add_parser(sub)
    aggregator_commands.add_parser(sub)
    training_commands.add_parser(sub)
    registry_commands.add_parser(sub)
    retrain_commands.add_parser(sub)
    deploy_commands.add_parser(sub)
    certs_commands.add_parser(sub)
    demo.add_parser(sub)
    return apply_conventions(parser)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        return _interrupted()
    # ibis (inside Feast's DuckDB offline store) warns about its own deprecations on every query.
    # Set once Feast is imported: its modules put a "once" filter for DeprecationWarning in front
    # of every filter when they load, which let these through to an operator's terminal.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        args.handler(config, args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at the interpreter's exit
    except USER_ERRORS as e:
        print(f"fedstore: error: {e}", file=sys.stderr)
        return FAILED
    except BrokenPipeError:
        # whoever read the output stopped early (`fedstore region status | head`): not a failure to
        # report; stdout goes to /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process its pipe reader left
    except OSError as e:
        problem = storage_problem(e)
        if problem is None:
            raise
        print(f"fedstore: error: {problem}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return _interrupted()
    return 0


def _interrupted() -> int:
    print("fedstore: interrupted", file=sys.stderr)
    return 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped


if __name__ == "__main__":
    sys.exit(main())
