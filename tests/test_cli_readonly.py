"""Read-only commands (`check`, `status`, `session export`, the source of `session copy`
and `session import`) never create a file or a database: a store that does not exist
is exit 3 with a clear line, and the directory is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_tg.cli import main

# Where a session could be but is not: a missing directory, so that any mkdir shows.
STORES: dict[str, Callable[[Path], str]] = {
    "file": lambda d: (d / "missing_dir" / "x.json").as_uri(),
    "sqlite": lambda d: f"sqlite:///{d}/missing_dir/x.db?name=bot",
    "sqlite-relative": lambda d: "sqlite:///missing_dir/x.db",
    "env-fallback": lambda d: f"env://RTG_UNSET_SESSION?fallback=sqlite:///{d}/missing_dir/x.db",
}

CHECK = [sys.executable, "-m", "resilient_tg.cli", "check", "--api-id", "1", "--api-hash", "abc"]


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (relative SQLite paths land here)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("RTG_UNSET_SESSION", raising=False)
    return work


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(STORES))
def test_check_on_a_store_that_does_not_exist_exits_3_and_creates_nothing(
    workdir: Path, kind: str
) -> None:
    url = STORES[kind](workdir)
    result = subprocess.run(
        [*CHECK, url, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=workdir,
        env=_env_without("RTG_UNSET_SESSION"),
    )
    assert result.returncode == 3, result.stderr
    assert "nothing was created" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(workdir) == []


def test_check_of_a_plain_path_that_does_not_exist_creates_nothing(workdir: Path) -> None:
    result = subprocess.run(
        [*CHECK, "missing_dir/x.json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=workdir,
    )
    assert result.returncode == 3, result.stderr
    assert "no such file" in result.stderr
    assert tree(workdir) == []


@pytest.mark.parametrize("kind", sorted(STORES))
def test_session_export_of_a_store_that_does_not_exist_exits_3_and_creates_nothing(
    workdir: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = STORES[kind](workdir)
    for fmt in (["--json", "--stdout"], ["--telethon", "out"]):
        code, err = run_main(capsys, "session", "export", url, *fmt)
        assert code == 3, err
        assert "nothing was created" in err
        assert tree(workdir) == []


@pytest.mark.parametrize("kind", sorted(STORES))
def test_copy_and_import_from_a_store_that_does_not_exist_create_neither_store(
    workdir: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = STORES[kind](workdir)
    target = (workdir / "target" / "t.json").as_uri()
    for argv in (["session", "copy", source, target], ["session", "import", source, target]):
        code, err = run_main(capsys, *argv)
        assert code == 3, err
        assert "nothing was created" in err
        assert tree(workdir) == []


def test_a_sqlite_file_without_sessions_is_not_changed(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing SQLite file that resilient_tg never wrote gets no tables from a
    read-only command."""
    other = workdir / "other.db"
    other.write_bytes(b"")
    url = f"sqlite:///{other}"
    code, err = run_main(capsys, "session", "export", url, "--json", "--stdout")
    assert code == 3, err
    assert "holds no session" in err
    code, err = run_main(capsys, "session", "copy", url, (workdir / "t.json").as_uri())
    assert code == 3, err
    assert other.read_bytes() == b""
    assert tree(workdir) == ["other.db"]


def test_status_of_a_status_file_that_does_not_exist_creates_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(capsys, "status", "--file", "missing_dir/status.json")
    assert code == 1, err
    assert "no status file" in err
    code, err = run_main(capsys, "status", "--file", "missing_dir/status.json", "--live")
    assert code == 1, err
    assert tree(workdir) == []


def _env_without(name: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != name}
