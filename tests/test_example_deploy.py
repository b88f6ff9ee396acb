"""examples/deploy: what can be checked without a Docker engine or systemd running.

The image is not built and the unit is not started here; these tests check that the
files are well formed, keep the session on a volume, and that every command they run
exists and parses with the real CLI parser.
"""

from __future__ import annotations

import configparser
import fnmatch
import importlib.metadata
import inspect
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from resilient_tg import ResilientClient
from resilient_tg.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEPLOY = EXAMPLES / "deploy"
STATUS_FILE = "/data/status.json"
SHUTDOWN_TIMEOUT = inspect.signature(ResilientClient).parameters["shutdown_timeout"].default


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def console_scripts() -> set[str]:
    """The commands the installed package provides."""
    dist = importlib.metadata.distribution("resilient-tg")
    return {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}


def assert_cli_parses(argv: list[str]) -> None:
    """``argv`` is a real ``resilient-tg`` command line (argparse exits on an error)."""
    assert argv[0] in console_scripts()
    args = build_parser().parse_args(argv[1:])
    assert args.command == argv[1]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value.strip())
    assert match, value
    scale = {"ms": 0.001, "s": 1, "m": 60, None: 1}[match.group(2)]
    return float(match.group(1)) * scale


# docker-compose.yml ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Any:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_keeps_the_session_on_a_named_volume(compose: Any) -> None:
    gateway = compose["services"]["gateway"]
    assert "tg-session" in compose["volumes"]
    assert "tg-session:/data" in gateway["volumes"]
    assert gateway["environment"]["TG_STORE"] == "file:///data/session.json"
    assert gateway["environment"]["TG_STATUS_FILE"] == STATUS_FILE


def test_compose_healthcheck_runs_resilient_tg_status_on_the_status_file(compose: Any) -> None:
    check = compose["services"]["gateway"]["healthcheck"]
    assert check["test"][0] == "CMD"
    argv = check["test"][1:]
    assert argv == ["resilient-tg", "status", "--file", STATUS_FILE]
    assert_cli_parses(argv)


def test_compose_gives_a_clean_shutdown_more_time_than_shutdown_timeout(compose: Any) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["stop_signal"] == "SIGTERM"
    assert seconds(gateway["stop_grace_period"]) > SHUTDOWN_TIMEOUT
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )


# Dockerfile --------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_with_data_on_a_volume() -> None:
    assert instructions("FROM") == ["python:3.11-slim"]
    users = instructions("USER")
    assert users
    assert users[-1] not in ("root", "0")
    assert any("/data" in json.loads(v) for v in instructions("VOLUME"))
    env = " ".join(instructions("ENV"))
    assert "TG_STORE=file:///data/session.json" in env
    assert f"TG_STATUS_FILE={STATUS_FILE}" in env


def build_context() -> Path:
    """The Dockerfile's build context, as docker-compose.yml gives it."""
    gateway = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["gateway"]
    context = (DEPLOY / gateway["build"]["context"]).resolve()
    assert (context / gateway["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    return context


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, flags (--chown=...) dropped."""
    out = []
    for arguments in instructions("COPY"):
        words = [w for w in shlex.split(arguments) if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes ``relative`` (last matching pattern wins; a
    pattern also matches everything under a directory it names)."""
    result = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            result = not negate
    return result


def test_every_file_the_dockerfile_copies_exists_in_its_build_context() -> None:
    context = build_context()
    assert context == ROOT  # the checkout: the package is installed from it
    header = (DEPLOY / "Dockerfile").read_text()
    assert "docker build -f examples/deploy/Dockerfile -t resilient-tg-gateway ." in header
    ignore = DEPLOY / "Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [source for sources, _ in copies() for source in sources]
    assert sources
    for source in sources:
        assert (context / source).exists(), source
        assert not ignored(source, patterns), f"{source} is excluded by {ignore.name}"
    assert ignored(".venv", patterns)
    assert ignored(".git", patterns)


def test_dockerfile_installs_the_package_from_the_checkout_with_an_extra_that_exists() -> None:
    extras = importlib.metadata.metadata("resilient-tg").get_all("Provides-Extra") or []
    installs = [run for run in instructions("RUN") if "pip install" in run]
    assert len(installs) == 1
    argv = shlex.split(installs[0].split("&&")[0])
    (spec,) = [a for a in argv[argv.index("install") + 1 :] if not a.startswith("-")]
    match = re.fullmatch(r"(/[\w/.-]+)\[([\w,-]+)\]", spec)
    assert match, f"{spec!r} is not a path in the image (a PyPI name would not install)"
    directory, wanted = match.group(1), match.group(2).split(",")
    assert all(extra in extras for extra in wanted)
    # That directory holds the copied checkout: pyproject.toml, README.md and src/.
    copied = {}
    for sources, destination in copies():
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") else destination
            copied[target.rstrip("/")] = source
    for needed in ("pyproject.toml", "README.md", "src"):
        assert f"{directory}/{needed}" in copied, needed
    # No PyPI requirement anywhere (resilient-tg is not published there).
    assert not re.search(
        r"(?<![/\w-])resilient-tg\b", " ".join(instructions("RUN") + instructions("ARG"))
    )


def test_dockerfile_cmd_runs_a_copied_example_and_healthcheck_parses() -> None:
    destinations = {destination: sources for sources, destination in copies()}
    (cmd,) = instructions("CMD")
    argv = json.loads(cmd)
    assert argv[0] == "python"
    (source,) = destinations[argv[1]]
    assert (build_context() / source).is_file()
    assert (build_context() / source).parent == EXAMPLES

    (check,) = instructions("HEALTHCHECK")
    _, _, command = check.partition("CMD ")
    assert_cli_parses(json.loads(command))


# systemd unit ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    parser.read_string((DEPLOY / "resilient-tg.service").read_text())
    return parser


def test_unit_restarts_always_and_stops_with_sigterm_in_time(
    unit: configparser.ConfigParser,
) -> None:
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_can_write_only_the_session_directory(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].split() == ["/var/lib/resilient-tg"]
    assert service["User"] not in ("root", "0")
    text = (DEPLOY / "resilient-tg.service").read_text()
    assert "TG_STORE=file:///var/lib/resilient-tg/session.json" in text
    assert "TG_STATUS_FILE=/var/lib/resilient-tg/status.json" in text


def test_unit_execstart_runs_an_example_that_exists(unit: configparser.ConfigParser) -> None:
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/bin/python")
    assert (EXAMPLES / Path(argv[1]).name).is_file()


def test_readme_says_the_images_were_not_built_here() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "not built" in readme


def test_every_resilient_tg_command_in_the_deploy_files_parses() -> None:
    found = []
    for name in ("README.md", "docker-compose.yml", "Dockerfile"):
        for match in re.finditer(
            r"resilient-tg (?:login|status|check) [^\n`]*", (DEPLOY / name).read_text()
        ):
            argv = shlex.split(match.group(0), comments=True)
            assert_cli_parses(argv)
            found.append(argv[1])
    assert {"login", "status"} <= set(found)
