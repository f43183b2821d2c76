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


# each command word and the module that defines it: a run imports only its own command's module
# (most import Feast, which takes seconds to load; `fedstore --version` and `fedstore certs` need none)
COMMAND_MODULES = {
    "region": "region_commands",
    "serve": "serve_commands",
    "aggregator": "aggregator_commands",
    "train": "training_commands",
    "registry": "registry_commands",
    "retrain": "retrain_commands",
    "deploy": "deploy_commands",
    "certs": "certs_commands",
    "demo": "demo",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command tree, or (given the command line) only the part it names.

    Imported here, not at the top: the commands import Feast, which takes seconds, and a Ctrl-C
    meanwhile must land inside main() (one line, exit 130), not in the console script's import.
    """
    import importlib

    wanted = list(COMMAND_MODULES) if argv is None else _commands_needed(argv)
    modules = [importlib.import_module(f"fedstore.cli.{COMMAND_MODULES[word]}") for word in wanted]

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
    for module in modules:
        module.add_parser(sub)
    return apply_conventions(parser)


def _commands_needed(argv: list[str]) -> list[str]:
    """The command the line names; none for a bare ``--version``; all when it names none we know
    (so argparse's usage error and ``--help`` list every command)."""
    words = iter(argv)
    for token in words:
        if token == "--config":
            next(words, None)  # its value, whatever it spells
        elif not token.startswith("-"):
            return [token] if token in COMMAND_MODULES else list(COMMAND_MODULES)
    return [] if "--version" in argv and not {"-h", "--help"} & set(argv) else list(COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser(sys.argv[1:] if argv is None else argv)
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
