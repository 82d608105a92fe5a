"""The ``biofo`` command line.

Each subcommand is wired to one function in the module that owns the work. Functions of commands
with ``--json`` return a dict; it is printed as one JSON object on the last line of stdout. The
function is imported only when its command runs, so ``biofo serve`` never loads benchmark code and
the base install works without torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    target: str  # "module:function"
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda parser: None)
    emits_json: bool = True


class _ListOption(argparse.Action):
    """A list option that takes ``a b`` as well as ``a,b`` (and a mix of both)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = [item for value in values for item in value.split(",") if item]
        if not items:
            parser.error(f"{option_string} needs at least one name")
        setattr(namespace, self.dest, items)


def _list_option(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(name, nargs="+", action=_ListOption, default=None, help=f"{help} (a b or a,b)")


def _records(parser: argparse.ArgumentParser) -> None:
    _list_option(parser, "--records", "MIT-BIH record names")


def _out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench/results", help="folder for tables and plots")


def _bench_rules(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["mitbih", "chbmit"], required=True)
    _list_option(parser, "--rules", "learning rules")
    parser.add_argument("--quick", action="store_true", help="small subset, for the test suite")
    _out(parser)


def _bench_paper(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["mitbih", "chbmit"], required=True)
    parser.add_argument("--quick", action="store_true", help="small subset, for the test suite")
    _out(parser)


def _bench_robustness(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="two records, first 10 minutes")
    _out(parser)


def _eval_ecg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol", choices=["inter-patient", "patient-specific", "hybrid"], required=True
    )
    parser.add_argument("--rule", default="biofo")
    _records(parser)
    _out(parser)


def _eval_eeg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="chbNN or all")
    parser.add_argument("--rule", default="biofo")
    _out(parser)


def _replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", help="MIT-BIH record (e.g. mitdb/208), CHB-MIT EDF file or eegmmidb run (S001R03.edf)"
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--label-minutes", type=float, default=5.0)
    parser.add_argument("--speed", choices=["max", "1"], default="max")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much signal")
    parser.add_argument("--patient-id", default=None)
    parser.add_argument("--body", choices=["json", "float32"], default="json",
                        help="segment body: JSON, or binary float32 samples (application/octet-stream)")


def _bench_daemon(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--device-r-peaks", action="store_true", help="devices send R peaks; no detection")
    parser.add_argument("--eeg-streams", type=int, default=0, help="CHB-MIT EEG devices beside the ECG ones")
    parser.add_argument("--body", choices=["json", "float32"], default="json",
                        help="segment body: JSON, or binary float32 samples (application/octet-stream)")
    parser.add_argument("--max-resident", type=int, default=None, help="models the daemon keeps in memory")


def _bench_crashloop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--record", default="208", help="MIT-BIH record the device replays")
    parser.add_argument("--minutes", type=float, default=None, help="replay only this much of it")
    parser.add_argument("--seed", type=int, default=0)


def _bench_templates(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", default="208", help="MIT-BIH record the device replays")
    parser.add_argument("--label-minutes", type=float, default=5.0, help="minutes labelled before the rest is scored")
    parser.add_argument("--minutes", type=float, default=None, help="replay only this much of the record")
    _out(parser)


def _bench_fuzz(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-examples", type=int, default=200, help="per operation and role")
    parser.add_argument("--seed", dest="seed_value", type=int, default=0)


def _energy_probe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0)


def _serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--db", default=None, help="SQLite file")
    parser.add_argument("--engine", choices=["torch", "onnxruntime"], default=None)
    parser.add_argument("--workers", type=int, default=None,
                        help="feature-extraction processes (default: one per core; 0: none)")


def _token_create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=["device", "clinician", "admin"], required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--db", default=None, help="SQLite file")


def _export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="patient id as the device sends it")
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument("--db", default=None, help="SQLite file")


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="SQLite file (default: BIOFO_DB, else biofo.db)")


def _db_vacuum(parser: argparse.ArgumentParser) -> None:
    _db(parser)
    parser.add_argument("--full", action="store_true",
                        help="rewrite the whole file (the daemon must be stopped); default: incremental, safe while it runs")


def _bench_soak(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours per stream")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--labels-per-hour", type=float, default=60.0, help="labels a clinician gives per stream")
    parser.add_argument("--samples-hours", type=float, default=4.0, help="retention: unlabelled samples kept")
    parser.add_argument("--windows-hours", type=float, default=12.0, help="retention: unlabelled windows kept")
    parser.add_argument("--checkpoints", type=int, default=3, help="retention: periodic checkpoints kept")
    _out(parser)


def _train_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=["ecg", "eeg", "all"], default="all")
    parser.add_argument("--out", default=None, help="folder for the model files")


COMMANDS: tuple[Command, ...] = (
    Command(("data", "check"), "signals.datafiles:check_data_command", "verify the PhysioNet files"),
    Command(("bench", "qrs"), "bench.qrs:run", "QRS detector against reference beats", _records),
    Command(("bench", "engines"), "bench.engines:run", "torch vs onnxruntime: latency, install size", _out),
    Command(("energy", "probe"), "app.energy:probe", "average power now, per rail", _energy_probe),
    Command(("serve",), "app.server:serve", "run the daemon", _serve, emits_json=False),
    Command(("token", "create"), "app.server:create_token", "issue a token", _token_create, emits_json=False),
    Command(("train-base",), "bench.train_base:train_base", "train the bundled base models", _train_base,
            emits_json=False),
    Command(("export", "wfdb"), "app.export:wfdb_command", "ECG record + labels and predictions as WFDB annotations",
            _export, emits_json=False),
    Command(("export", "bids"), "app.export:bids_command", "EEG as BIDS with the seizure labels in events.tsv",
            _export, emits_json=False),
    Command(("replay",), "app.replay:run", "play a real record into a running daemon", _replay),
    Command(("bench", "rules"), "bench.rules:run", "every learning rule on one split: accuracy, time, energy",
            _bench_rules),
    Command(("bench", "paper"), "bench.paper:run",
            "the Bio-FO paper's table on its own protocol, then on patient-level splits",
            _bench_paper),
    Command(("bench", "body"), "bench.body:run", "reading one segment's body: JSON vs binary", _out),
    Command(("bench", "update"), "bench.update:run", "cost of one streaming update vs a forward pass", _out),
    Command(("bench", "early-exit"), "bench.early_exit:run", "Bio-FO early exit: accuracy vs energy saved", _out),
    Command(("eval", "ecg"), "bench.eval_ecg:run", "MIT-BIH protocols (EC57 scoring), label efficiency",
            _eval_ecg),
    Command(("eval", "eeg"), "bench.eval_eeg:run", "CHB-MIT per patient: leave-one-seizure-out adaptation",
            _eval_eeg),
    Command(("bench", "daemon"), "bench.daemon:run", "N real-time ECG devices against one daemon: latency, RSS",
            _bench_daemon),
    Command(("bench", "crashloop"), "bench.crashloop:run", "SIGKILL during a labelled replay, restart, compare",
            _bench_crashloop),
    Command(("bench", "templates"), "bench.template_workflow:run",
            "label the first minutes by beat template in Chromium vs one by one", _bench_templates),
    Command(("bench", "fuzz"), "bench.fuzz:run", "schemathesis on every operation, per role", _bench_fuzz),
    Command(("db", "stats"), "app.maintenance:stats", "rows and bytes per table, oldest sample kept", _db),
    Command(("db", "vacuum"), "app.maintenance:vacuum", "give free pages back to the filesystem", _db_vacuum),
    Command(("bench", "soak"), "bench.soak:run",
            "a day of streams in compressed time: database size with and without retention", _bench_soak),
    Command(("bench", "robustness"), "bench.robustness:run",
            "device variants (rates, leads, gain, noise) through the daemon's ingest path", _bench_robustness),
)


# Sub-command groups store the chosen word under a private name: a group called ``token`` must not
# shadow the ``--token`` option of another command.
_GROUP_DEST = "_group "


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biofo", description=__doc__.splitlines()[0])
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest=_GROUP_DEST, required=True, metavar="command")
    }
    for command in COMMANDS:
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                group = groups[prefix[:-1]].add_parser(prefix[-1])
                groups[prefix] = group.add_subparsers(
                    dest=_GROUP_DEST + " ".join(prefix), required=True, metavar="command"
                )
        sub = groups[command.words[:-1]].add_parser(command.words[-1], help=command.help)
        command.arguments(sub)
        if command.emits_json:
            sub.add_argument("--json", action="store_true", help="print one JSON object last")
        sub.set_defaults(_command=command)
    return parser


def resolve(target: str) -> Callable[..., Any]:
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def parse(argv: list[str] | None) -> tuple[Command, dict[str, Any], bool]:
    """The command named by ``argv``, the keyword arguments its function takes, and ``--json``."""
    args = vars(build_parser().parse_args(argv))
    command: Command = args["_command"]
    options = {key: value for key, value in args.items() if not key.startswith("_") and key != "json"}
    options["progress"] = sys.stdout.isatty()
    return command, options, bool(args.get("json"))


def main(argv: list[str] | None = None) -> int:
    command, options, as_json = parse(argv)
    result = resolve(command.target)(**options)
    if command.emits_json:
        print(json.dumps(result, default=float) if as_json else json.dumps(result, indent=2, default=float))
        if isinstance(result, dict) and result.get("ok") is False:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
