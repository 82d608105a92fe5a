"""The ``biofo`` command line as a user runs it: the installed script, in a subprocess.

Every option of every command must reach its function (a group word such as ``token`` once
swallowed the ``--token`` option of ``replay``), and the commands the README shows run as shown.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMANDS, Command, build_parser, parse, resolve
from tests.conftest import ADMIN_TOKEN, Daemon
from signals.datafiles import data_root

ROOT = Path(__file__).resolve().parents[1]
BIOFO = Path(sys.executable).with_name("biofo")


def run_biofo(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``biofo ARGS`` from the repository root, as typed in a shell; fails with its output."""
    done = subprocess.run([str(BIOFO), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"biofo {shlex.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def last_json(done: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def _subparser(command: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser()
    for word in command.words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _every_option(command: Command) -> list[str]:
    """An argv for ``command`` that gives every one of its options a value."""
    argv = list(command.words)
    for action in _subparser(command)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        value = str(action.choices[0]) if action.choices else ("1" if action.type in (int, float) else "x")
        if not action.option_strings:
            argv.append(value)
        elif action.nargs == 0:
            argv.append(action.option_strings[-1])
        else:
            argv += [action.option_strings[-1], value]
    return argv


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c.words))
def test_every_option_reaches_the_function(command: Command) -> None:
    parsed, options, _ = parse(_every_option(command))
    assert parsed is command
    destinations = {a.dest for a in _subparser(command)._actions if a.dest not in {"help", "json"}}
    assert destinations <= set(options), destinations - set(options)
    inspect.signature(resolve(command.target)).bind(**options)


def test_list_options_take_spaces_and_commas() -> None:
    _, spaced, _ = parse(["bench", "rules", "--dataset", "mitbih", "--rules", "biofo", "bp", "drtp"])
    _, commas, _ = parse(["bench", "rules", "--dataset", "mitbih", "--rules", "biofo,bp", "drtp"])
    assert spaced["rules"] == commas["rules"] == ["biofo", "bp", "drtp"]
    _, records, _ = parse(["eval", "ecg", "--protocol", "hybrid", "--records", "100,208"])
    assert records["records"] == ["100", "208"]
    with pytest.raises(SystemExit):
        parse(["bench", "rules", "--dataset", "mitbih", "--rules", ","])


def _readme_commands() -> tuple[list[list[str]], list[list[str]]]:
    """The README's ``biofo ...`` commands as argv: whole commands (shell blocks, and inline code that
    gives flags), and inline mentions of a command by name."""
    text = (ROOT / "README.md").read_text()
    block_lines = [line.split("#")[0].strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)
                   for line in block.splitlines()]
    inline = [shlex.split(code) for code in re.findall(r"`(biofo [^`]*)`", text)]
    whole = [shlex.split(line) for line in block_lines if line.startswith("biofo ")]
    whole += [argv for argv in inline if any(word.startswith("-") for word in argv)]
    named = [[word for word in argv if word not in ("…", "...")] for argv in inline
             if not any(word.startswith("-") for word in argv)]
    # "--dataset mitbih|chbmit" stands for one command per choice.
    expanded = [list(argv) for command in whole
                for argv in itertools.product(*(word.split("|") for word in command))]
    # Inline mentions may elide arguments ("biofo eval ecg --protocol …"); only full commands count.
    return [argv for argv in expanded if "…" not in argv and "..." not in argv], named


def test_readme_commands_parse() -> None:
    whole, named = _readme_commands()
    assert ["biofo", "token", "create", "--role", "device", "--name", "bed 7 monitor"] in whole
    for argv in whole:
        try:
            parse(argv[1:])
        except SystemExit as refused:
            raise AssertionError(f"README command does not parse: {shlex.join(argv)}") from refused
    known = {command.words for command in COMMANDS}
    for argv in named:
        assert tuple(argv[1:]) in known, f"README names a command that does not exist: {shlex.join(argv)}"


def test_data_check() -> None:
    result = last_json(run_biofo("data", "check", "--json"))
    assert result["ok"] is True and result["missing"] == []
    assert result["mitdb_records"] == 48 and result["chbmit_files"] > 0


def test_energy_probe() -> None:
    result = last_json(run_biofo("energy", "probe", "--seconds", "0.3", "--json"))
    assert result["source"] and result["watts"] >= 0


def test_tokens_and_replay_against_a_real_daemon(daemon: Daemon) -> None:
    device = run_biofo("token", "create", "--role", "device", "--name", "bed 7 monitor",
                       "--db", str(daemon.db)).stdout.strip()
    admin = run_biofo("token", "create", "--role", "admin", "--name", "replay",
                      "--db", str(daemon.db)).stdout.strip()
    assert device and admin and device != admin and ADMIN_TOKEN not in (device, admin)

    record = str(data_root() / "mitdb" / "201")
    unlabelled = last_json(run_biofo("replay", record, "--url", daemon.url, "--token", device,
                                     "--minutes", "0.5", "--label-minutes", "0", "--json"))
    assert unlabelled["windows"] > 30 and unlabelled["labels"] == 0

    labelled = last_json(run_biofo("replay", record, "--url", daemon.url, "--token", admin,
                                   "--patient-id", "bed-8", "--minutes", "1", "--label-minutes", "0.5",
                                   "--json"))
    assert labelled["labels"] > 30 and labelled["updates"] == labelled["labels"]
    with daemon.client() as client:
        model = client.get("/v1/models/ecg/bed-8").json()
    assert model["updates_applied"] == labelled["labels"]


def test_device_token_cannot_label_through_replay(daemon: Daemon) -> None:
    device = run_biofo("token", "create", "--role", "device", "--name", "bed 9",
                       "--db", str(daemon.db)).stdout.strip()
    record = str(data_root() / "mitdb" / "201")
    done = subprocess.run([str(BIOFO), "replay", record, "--url", daemon.url, "--token", device,
                           "--minutes", "0.5", "--label-minutes", "0.5", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "403" in done.stderr


def test_bench_rules_quick_with_comma_list(tmp_path: Path) -> None:
    result = last_json(run_biofo("bench", "rules", "--dataset", "chbmit", "--rules", "biofo,bp",
                                 "--quick", "--out", str(tmp_path), "--json"))
    assert list(result["rules"]) == ["biofo", "bp"]
    assert all(0.0 <= figures["accuracy"] <= 1.0 for figures in result["rules"].values())
