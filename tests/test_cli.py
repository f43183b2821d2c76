"""The CLI: user mistakes are one line on stderr, never a traceback; exit 2 for a wrong command line,
1 for a command that could not be done."""

from __future__ import annotations

import os
from datetime import timedelta
import subprocess
import sys

import pytest

from conftest import write_config
from exit_codes import expected_exit
from fedstore.cli import main
from handmade import T0, write_sources


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def cfg(tmp_path, pki):
    import yaml

    from border import with_mtls

    path = write_config(tmp_path / "fed.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    path.write_text(yaml.safe_dump(with_mtls(yaml.safe_load(path.read_text()), pki)))  # the border on mutual TLS
    return str(path)


# (case, argv after --config, fragment expected on stderr)
MISTAKES = [
    ("unknown region", ["region", "apply", "--region", "TH"], "unknown region 'TH'; this federation has MY, SG"),
    ("materialize before apply", ["region", "materialize", "--region", "MY"], "run `fedstore region apply --region MY` first"),
    ("non-numeric customers", ["region", "generate", "--region", "MY", "--customers", "many"], "expected a positive whole number"),
    ("zero days", ["region", "generate", "--region", "MY", "--days", "0"], "expected a positive whole number"),
    ("bad end time", ["region", "materialize", "--region", "MY", "--end", "yesterday"], "expected an ISO 8601 time"),
    ("end in the future", ["region", "materialize", "--region", "MY", "--end", "2999-01-01"], "is in the future"),
    ("empty image", ["deploy", "k8s", "--image", ""], "--image must name a container image"),
    ("bad storage class", ["deploy", "k8s", "--storage-class", "Fast_RWX"],
     "argument --storage-class: expected a StorageClass name"),
    ("generated end in the future", ["region", "generate", "--region", "MY", "--end", "2999-01-01"], "is after today"),
    ("missing sub-command", ["region"], "required"),
    ("negative grace", ["serve", "--region", "MY", "--grace", "-1"], "--grace must be a number of seconds, 0 or more"),
    ("grace not a number", ["serve", "--region", "MY", "--grace", "nan"], "--grace must be a number of seconds"),
    ("empty entity file", ["region", "training-set", "--region", "MY", "--entities", "", "--feature-service",
                           "fraud_scoring", "--out", "t.parquet"], "argument --entities: expected a path, got an empty"),
    ("unknown codec", ["region", "training-set", "--region", "MY", "--entities", "e.parquet", "--feature-service",
                       "fraud_scoring", "--out", "t.parquet", "--compression", "rar"], "argument --compression: invalid choice"),
    ("empty chart", ["region", "drift", "--region", "MY", "--chart", ""], "argument --chart: expected a path"),
    ("empty model file", ["region", "evaluate", "--region", "MY", "--epsilon", "1", "--model-file", ""],
     "argument --model-file: expected a path"),
    # these reached the network and said "did not answer", or served the config's address instead
    ("address without a port", ["region", "send-stats", "--region", "MY", "--address", "nonsense"],
     "argument --address: expected host:port (e.g. 127.0.0.1:50100), got 'nonsense'"),
    ("address with a bad port", ["train", "--address", "127.0.0.1:99999"], "argument --address: expected host:port"),
    ("empty address", ["serve", "--region", "MY", "--address", ""], "argument --address: expected host:port"),
    ("registry address", ["registry", "--address", ":50100", "list"], "argument --address: expected host:port"),
    # an empty view list (an unset variable) materialised every view
    ("empty views", ["region", "materialize", "--region", "MY", "--views", ""], "expected one or more feature view names"),
    ("only commas", ["region", "materialize", "--region", "MY", "--views", ",,"], "expected one or more feature view"),
]


def test_pinning_workers_where_the_os_cannot_is_a_one_line_error(capsys, cfg, monkeypatch):
    import os

    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    code, _, err = run(capsys, "--config", cfg, "serve", "--region", "MY", "--pin-cpus")
    assert code == 1 and "--pin-cpus needs Linux" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("case,argv,fragment", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_user_mistakes_exit_1_or_2_with_one_line(capsys, cfg, case, argv, fragment):
    code, out, err = run(capsys, "--config", cfg, *argv)
    assert code == expected_exit(err)  # 2: the command line was wrong; 1: it could not be done
    assert fragment in err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert fragment in last or fragment == "required"


def test_missing_or_invalid_config_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run(capsys, "--config", str(tmp_path / "none.yaml"), "region", "status", "--region", "MY")
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: {name: x}\nregions: [{code: MY}]\n")
    code, _, err = run(capsys, "--config", str(bad), "region", "status", "--region", "MY")
    assert code == 1 and err.count("\n") == 1 and "regions[0]." in err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    code, _, err = run(capsys, "--config", str(empty), "region", "status", "--region", "MY")
    assert code == 1 and err.count("\n") == 1 and f"config file {empty} is empty" in err


def test_apply_materialize_status_through_the_cli(capsys, cfg, tmp_path):
    write_sources(tmp_path / "data" / "MY", customers=30, drivers=4)
    code, out, _ = run(capsys, "--config", cfg, "region", "apply", "--region", "my")
    assert code == 0 and "applied project fedstore_my: 4 feature views" in out
    code, out, _ = run(capsys, "--config", cfg, "region", "materialize", "--region", "MY", "--no-progress")
    assert code == 0
    assert "customer_transactions: read 30 rows, wrote 30 entities" in out
    assert "succeeded" in out
    code, out, _ = run(capsys, "--config", cfg, "region", "status", "--region", "MY")
    assert code == 0
    assert "Region MY (Malaysia, PDPA-MY)" in out
    for view in ("customer_transactions", "customer_profile", "driver_performance"):
        assert view in out
    assert "succeeded" in out and "full" in out


def test_status_and_materialize_of_a_region_never_applied_create_no_files(capsys, cfg, tmp_path):
    data = tmp_path / "data" / "MY"
    code, out, _ = run(capsys, "--config", cfg, "region", "status", "--region", "MY")
    assert code == 0 and "not applied yet: run `fedstore region apply --region MY`" in out
    assert "no materialisation jobs yet" in out
    code, _, err = run(capsys, "--config", cfg, "region", "materialize", "--region", "MY")
    assert code == 1 and err.splitlines() == [
        "fedstore: error: region MY has no registry yet: run `fedstore region apply --region MY` first"]
    assert not data.exists()  # neither a ledger nor a lock file
    write_sources(data, customers=5, drivers=2)  # sources only: still nothing of the node's own
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert run(capsys, "--config", cfg, "region", "status", "--region", "MY")[0] == 0
    assert run(capsys, "--config", cfg, "region", "materialize", "--region", "MY")[0] == 1
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


@pytest.mark.parametrize("broken", ["column missing", "not parquet", "damaged page"])
def test_a_broken_source_file_is_one_line_for_every_command_that_reads_it(capsys, cfg, tmp_path, broken):
    import struct

    import pyarrow.parquet as pq

    tables = write_sources(tmp_path / "data" / "MY", customers=30, drivers=4)
    assert run(capsys, "--config", cfg, "region", "apply", "--region", "MY")[0] == 0
    source = tmp_path / "data" / "MY" / "sources" / "customer_profile.parquet"
    if broken == "column missing":
        pq.write_table(tables["customer_profile"].drop(["kyc_level"]), source)
        fragment = f"source {source} lacks column kyc_level, which feature view customer_profile reads"
    elif broken == "not parquet":
        source.write_text("customer_id,kyc_level\n1,2\n")
        fragment = f"source {source} is not readable Parquet"
    else:  # the footer is whole, so the column check passes; the pages fail only when read (was: tracebacks)
        raw = bytearray(source.read_bytes())
        data_end = len(raw) - 8 - struct.unpack("<I", raw[-8:-4])[0]
        raw[4:data_end] = bytes([0xAB]) * (data_end - 4)
        source.write_bytes(bytes(raw))
        fragment = str(source)
    pq.write_table(tables["customer_transactions"].select(["customer_id", "event_timestamp"]), tmp_path / "e.parquet")
    # the test owns its clock: every window ends just after the sources' three days, whatever today is
    # (with the default "ending now" the windows left the data behind and the broken file went unread)
    end = (T0 + timedelta(days=3)).isoformat()
    window = ["--end", end, "--days", "30"]
    commands = [
        ["region", "publish-stats", "--region", "MY", "--epsilon", "1", *window],
        ["region", "publish-training-stats", "--region", "MY", "--epsilon", "1", *window],
        ["region", "training-set", "--region", "MY", "--entities", str(tmp_path / "e.parquet"),
         "--feature-service", "fraud_scoring", "--out", str(tmp_path / "t.parquet"), "--no-progress"],
        ["region", "drift", "--region", "MY", "--date", f"{T0 + timedelta(days=2):%Y-%m-%d}"],
        ["region", "materialize", "--region", "MY", "--no-progress", "--end", end],  # the job is recorded as failed
    ]
    for argv in commands:
        code, _, err = run(capsys, "--config", cfg, *argv)
        assert code == expected_exit(err) and fragment in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert broken != "damaged page" or "could not be read" in err, (argv, err)
    assert not (tmp_path / "data" / "MY" / "outbox").exists() and not (tmp_path / "t.parquet").exists()


def test_bad_output_paths_are_refused_before_any_work(capsys, cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("CENTRE_TOKEN", "t")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.png").mkdir()
    cases = [
        # checked before the Train call (no aggregator runs here): a bad path used to fail after the
        # model was trained and registered, with a traceback
        (["train", "--token-env", "CENTRE_TOKEN", "--address", "127.0.0.1:1", "--out", str(tmp_path)],
         "is a directory"),
        (["train", "--token-env", "CENTRE_TOKEN", "--address", "127.0.0.1:1", "--out", str(tmp_path / "afile" / "m.json")],
         "cannot create the directory"),
        # checked before the report: matplotlib refused .txt with a traceback once the report (and its
        # triggers) were done, and a directory `--chart data` was saved as data.png while 'chart: data' was printed
        (["region", "drift", "--region", "MY", "--chart", str(tmp_path / "drift.txt")], "give a file name ending in .png"),
        (["region", "drift", "--region", "MY", "--chart", str(tmp_path / "adir.png")], "is a directory"),
        (["deploy", "k8s", "--out", str(tmp_path / "afile")], "cannot write manifests into"),
        (["deploy", "k8s", "--out", str(tmp_path / "afile" / "k8s")], "cannot write manifests into"),
    ]
    for argv, fragment in cases:
        code, _, err = run(capsys, "--config", cfg, *argv)
        assert code == 1 and fragment in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (tmp_path / "afile").read_text() == "x"


def test_a_model_file_with_nan_weights_is_refused_before_any_budget_is_spent(capsys, cfg, tmp_path):
    import json

    from fedstore.federation.training import LinearModel, training_spec

    spec = training_spec("fraud_scoring")
    model = LinearModel(spec.feature_service, spec.features, (0.5,) * len(spec.features), -1.0).to_dict()
    model["weights"][2] = float("nan")  # json writes NaN, and reads it back: a hand-edited file
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"name": "m", "version": 1, "model": model}))
    code, _, err = run(capsys, "--config", cfg, "region", "evaluate", "--region", "MY", "--model-file", str(path),
                       "--epsilon", "1")
    assert code == 1 and "not a model file" in err and "must be finite" in err and err.count("\n") == 1, err


_READ_ONLY_SCRIPT = """
import contextlib, io, json, sys
from fedstore.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        results.append([main(argv), err.getvalue()])
# the serving node only reads the region: it starts (its snapshots held in the process)
from fedstore.federation import load_config
from fedstore.serving.server import ServingNode
config = load_config(sys.argv[2])
ServingNode(config, config.region("MY"), address="127.0.0.1:0").start().stop(0)
print(json.dumps(results))
"""


def _without_root_override(argv: list[str]) -> list[str]:
    """As root, file modes bind only once the capabilities that override them are dropped."""
    import os
    import shutil

    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be simulated")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


@pytest.mark.slow
def test_a_read_only_data_directory_is_one_line_per_command_and_serving_still_starts(capsys, cfg, tmp_path):
    """Every command that writes the region's directory failed with a sqlite or PermissionError
    traceback; training-set wrote the dataset and then failed on the region's index; `serve`, which
    only reads, crashed opening the job ledger for writing."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    data = tmp_path / "data" / "MY"
    tables = write_sources(data, customers=30, drivers=4)
    for argv in (["region", "apply", "--region", "MY"], ["region", "materialize", "--region", "MY", "--no-progress"]):
        assert run(capsys, "--config", cfg, *argv)[0] == 0
    pq.write_table(tables["customer_transactions"].select(["customer_id", "event_timestamp"]), tmp_path / "e.parquet")
    commands = [
        ["region", "status", "--region", "MY"],
        ["region", "materialize", "--region", "MY", "--no-progress"],
        ["region", "apply", "--region", "MY"],
        ["region", "publish-stats", "--region", "MY", "--epsilon", "1"],
        ["region", "training-set", "--region", "MY", "--entities", str(tmp_path / "e.parquet"),
         "--feature-service", "fraud_scoring", "--out", str(tmp_path / "t.parquet"), "--no-progress"],
        ["region", "drift", "--region", "MY"],
    ]
    modes = {p: p.stat().st_mode for p in [data, *data.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        done = subprocess.run(
            _without_root_override([sys.executable, "-c", _READ_ONLY_SCRIPT,
                                    json.dumps([["--config", cfg, *c] for c in commands]), cfg]),
            capture_output=True, text=True, timeout=300)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert done.returncode == 0, done.stderr[-3000:]
    for argv, (code, err) in zip(commands, json.loads(done.stdout.splitlines()[-1]), strict=True):
        assert code == 1 and len(err.strip().splitlines()) == 1 and str(data) in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "t.parquet").exists()  # refused before the build, not after


def test_a_reader_that_stops_early_is_no_traceback(cfg, tmp_path):
    """`fedstore region status | head -1`: the reader closes the pipe before fedstore has written."""
    write_sources(tmp_path / "data" / "MY", customers=5, drivers=2)
    proc = subprocess.Popen([sys.executable, "-m", "fedstore.cli", "--config", cfg, "region", "status", "--region", "MY"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before the first line arrives
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_while_the_commands_load_is_one_line(capsys, cfg, monkeypatch):
    """Loading the commands (Feast among them) takes seconds; a Ctrl-C then was a KeyboardInterrupt
    traceback from the console script's `from fedstore.cli import main`, outside main()."""
    from fedstore.cli import entry as cli

    loaded = subprocess.run([sys.executable, "-c", "import sys, fedstore.cli; print('feast' in sys.modules)"],
                            capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "False", loaded.stderr  # so the slow imports happen inside main()

    def interrupted(argv: list[str] | None = None) -> None:  # Ctrl-C while build_parser() imports the commands
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    code, out, err = run(capsys, "--config", cfg, "region", "status", "--region", "MY")
    assert code == 130 and err == "fedstore: interrupted\n" and out == ""


def test_a_command_loads_only_its_own_module():
    """`fedstore --version` and commands that need no Feast (certs) answered after seconds of
    Feast's import on a loaded machine: every command's module was loaded for every run."""
    probe = ("import sys; from fedstore.cli.entry import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('feast' in sys.modules, file=sys.stderr)")
    for argv, feast_loaded in ((["--version"], False), (["certs", "init", "--help"], False),
                               (["--config", "region", "certs", "--help"], False),
                               (["region", "status", "--help"], True), (["--help"], True)):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=300)
        assert done.stderr.strip().splitlines()[-1] == str(feast_loaded), (argv, done.stderr)
    everything = subprocess.run([sys.executable, "-m", "fedstore.cli", "--help"], capture_output=True, text=True,
                                timeout=300)
    for word in ("region", "serve", "aggregator", "train", "registry", "retrain", "deploy", "certs", "demo"):
        assert word in everything.stdout  # --help still lists every command
    wrong = subprocess.run([sys.executable, "-m", "fedstore.cli", "regoin"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "invalid choice: 'regoin'" in wrong.stderr and "'certs'" in wrong.stderr


def test_an_empty_path_is_refused_not_taken_for_the_current_directory(capsys, cfg, tmp_path, monkeypatch):
    """`deploy k8s --out "$OUT"` with OUT unset wrote the manifests into the current directory;
    `--config ""` said the config file `.` is a directory."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, err = run(capsys, "--config", cfg, "deploy", "k8s", "--out", "")
    assert code == 2 and "argument --out: expected a path, got an empty string" in err.splitlines()[-1]
    assert list(work.iterdir()) == []
    code, _, err = run(capsys, "--config", "", "region", "status", "--region", "MY")
    assert code == 2 and "argument --config: expected a path, got an empty string" in err.splitlines()[-1]
    monkeypatch.setenv("FEDSTORE_CONFIG", "")  # set but empty: the default file, as when unset
    code, _, err = run(capsys, "region", "status", "--region", "MY")
    assert code == 1 and err == "fedstore: error: config file fedstore.yaml does not exist\n"


def test_view_names_are_each_taken_once_and_addresses_keep_ipv6_brackets():
    from fedstore.cli.arguments import host_port, view_names

    assert view_names(" customer_profile, driver_performance,customer_profile,") == ("customer_profile", "driver_performance")
    assert host_port("[::1]:50100") == "[::1]:50100" and host_port("0.0.0.0:0") == "0.0.0.0:0"


@pytest.mark.slow
def test_library_deprecation_warnings_do_not_reach_the_operators_terminal(cfg, tmp_path):
    """ibis warns on every query of Feast's DuckDB offline store; the CLI's filter was set before
    Feast's modules loaded and put their own filter in front of it, so a training set printed them."""
    import pyarrow.parquet as pq

    tables = write_sources(tmp_path / "data" / "MY", customers=20, drivers=3)
    pq.write_table(tables["customer_transactions"].select(["customer_id", "event_timestamp"]), tmp_path / "e.parquet")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    fedstore = [sys.executable, "-m", "fedstore.cli", "--config", cfg]
    for argv in (["region", "apply", "--region", "MY"],
                 ["region", "training-set", "--region", "MY", "--entities", str(tmp_path / "e.parquet"),
                  "--feature-service", "fraud_scoring", "--out", str(tmp_path / "t.parquet"), "--no-progress"]):
        done = subprocess.run(fedstore + argv, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Warning" not in done.stderr, done.stderr[-2000:]


def test_training_against_no_aggregator_says_it_did_not_answer(capsys, cfg, monkeypatch):
    from redis_servers import free_port

    monkeypatch.setenv("FEDSTORE_TOKEN", "t")
    code, _, err = run(capsys, "--config", cfg, "train", "--token-env", "FEDSTORE_TOKEN", "--address", f"127.0.0.1:{free_port()}")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "did not answer (UNAVAILABLE): is it running there? nothing was trained" in err and "refused" not in err


def test_materialize_quarantine_through_the_cli_says_how_many_rows_and_where(capsys, cfg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data" / "MY"
    tables = write_sources(data, customers=30, drivers=4, days=1)
    table = tables["customer_transactions"]
    spend = pa.array(["n/a" if i % 10 == 0 else "1.5" for i in range(table.num_rows)])
    pq.write_table(table.set_column(table.schema.get_field_index("spend_7d"), "spend_7d", spend),
                   data / "sources" / "customer_transactions.parquet")
    assert run(capsys, "--config", cfg, "region", "apply", "--region", "MY")[0] == 0
    code, _, err = run(capsys, "--config", cfg, "region", "materialize", "--region", "MY", "--no-progress")
    assert code != 0 and "spend_7d holds string" in err and err.count("\n") == 1  # strict by default
    code, out, _ = run(capsys, "--config", cfg, "region", "materialize", "--region", "MY", "--no-progress",
                       "--quarantine")
    assert code == 0, out
    line = next(s for s in out.splitlines() if "customer_transactions: read" in s)
    assert "customer_transactions: read 27 rows, 3 quarantined \u2192 " in line, line
    assert line.split("\u2192 ")[1].startswith(str(data / "quarantine"))


def test_materialize_quarantine_on_the_spark_engine_is_one_line(capsys, cfg, tmp_path):
    import yaml

    raw = yaml.safe_load(open(cfg).read())
    for region in raw["regions"]:
        if region["code"] == "MY":
            region["materialization"] = {"engine": "spark"}
    open(cfg, "w").write(yaml.safe_dump(raw))
    write_sources(tmp_path / "data" / "MY", customers=5, drivers=2, days=1)
    assert run(capsys, "--config", cfg, "region", "apply", "--region", "MY")[0] == 0
    code, out, err = run(capsys, "--config", cfg, "region", "materialize", "--region", "MY", "--quarantine")
    assert code == 1 and err.count("\n") == 1 and "--quarantine needs the local engine" in err, err
    assert "Traceback" not in err + out


def test_every_command_has_examples_and_every_option_says_what_it_is_for():
    import argparse

    from fedstore.cli.conventions import commands, is_leaf
    from fedstore.cli.entry import build_parser

    missing_help, missing_examples = [], []
    for path, parser, _ in commands(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help:
                missing_help.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
        if is_leaf(parser) and "examples:" not in (parser.epilog or ""):
            missing_examples.append(" ".join(path))
        if is_leaf(parser):  # and the help renders, defaults included
            assert "usage: fedstore " + " ".join(path) in parser.format_help()
    assert not missing_help, missing_help
    assert not missing_examples, missing_examples


def test_version_and_the_group_options_after_the_subcommand(capsys, cfg, tmp_path):
    from importlib import metadata

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"fedstore {metadata.version('fedstore')}\n"
    # --config where people put it: after the subcommand, as well as before
    before = run(capsys, "--config", cfg, "region", "status", "--region", "MY")
    after = run(capsys, "region", "status", "--region", "MY", "--config", cfg)
    assert before[0] == after[0] == 0 and before[1] == after[1] and "Region MY" in after[1]
    # a group's option (the registry's --address) after its subcommand: the same check of its value
    for argv in (["registry", "--address", ":50100", "list"], ["registry", "list", "--address", ":50100"]):
        code, _, err = run(capsys, "--config", cfg, *argv)
        assert code == 2 and "argument --address: expected host:port" in err
    # given after the subcommand it wins over the group's default, not the other way round
    from fedstore.cli.entry import build_parser

    args = build_parser().parse_args(["registry", "list", "--token-env", "OPS_TOKEN", "--config", str(tmp_path / "x.yaml")])
    assert (args.token_env, str(args.config)) == ("OPS_TOKEN", str(tmp_path / "x.yaml"))
    assert build_parser().parse_args(["registry", "list"]).token_env == "FEDSTORE_TOKEN"
