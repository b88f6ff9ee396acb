"""One exit code per situation across `resilient-tg`: the table in `--help` and in the
docs names every code, and each situation exits with the same code whichever command
meets it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from resilient_tg._cli import _common
from resilient_tg.cli import build_parser, main
from resilient_tg.stores import FileStore, SessionData

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(256))  # an auth key; these sessions never connect


def constants() -> dict[str, int]:
    return {
        name: getattr(_common, name)
        for name in _common.__all__
        if re.fullmatch(r"EXIT_[A-Z]+", name) and name != "EXIT_CODES_HELP"
    }


def help_table() -> dict[int, str]:
    rows = re.findall(r"^  (\d+)\s+(\S.*)$", _common.EXIT_CODES_HELP, re.MULTILINE)
    return {int(code): text for code, text in rows}


def docs_table() -> dict[int, str]:
    text = (ROOT / "docs" / "deploying.md").read_text()
    section = text.split("## Exit codes of `resilient-tg`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|", section, re.MULTILINE)
    return {int(code): situation for code, situation in rows}


def test_every_exit_code_is_in_the_help_and_the_docs_and_nothing_else() -> None:
    codes = set(constants().values()) - {_common.EXIT_OK}
    assert codes == set(help_table()) - {0}
    assert codes == set(docs_table()) - {0}
    assert len(set(constants().values())) == len(constants())  # one code, one name


def test_code_6_means_the_server_rejected_the_app() -> None:
    assert _common.EXIT_REJECTED == 6
    assert "api_id/api_hash" in help_table()[6]
    assert "fix the configuration" in help_table()[6]
    assert "api_id" in docs_table()[6]


def test_help_of_the_command_and_its_subcommands_shows_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["--help"], ["login", "--help"], ["session", "export", "--help"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert _common.EXIT_CODES_HELP in capsys.readouterr().out


# The same situation, the same code -------------------------------------------------------


def session(path: Path, port: int = 443) -> Path:
    """A session file holding a key (for a server that is not there: nothing connects)."""
    asyncio.run(
        FileStore(path).save(
            SessionData(dc_id=2, server_address="127.0.0.1", port=port, auth_key=KEY)
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_target_that_already_holds_something_exits_3_for_export_import_and_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = session(tmp_path / "source.json")
    taken = session(tmp_path / "taken.json", port=444)
    existing = tmp_path / "exported.txt"
    existing.write_text("keep me")
    (tmp_path / "telethon.session").write_text("keep me")

    outcomes = [
        run(capsys, "session", "export", source.as_uri(), "--json", "--output", str(existing)),
        run(capsys, "session", "export", source.as_uri(), "--telethon", str(tmp_path / "telethon")),
        run(capsys, "session", "import", str(source), taken.as_uri()),
        run(capsys, "session", "copy", source.as_uri(), taken.as_uri()),
    ]
    for code, err in outcomes:
        assert code == 3, err
        assert "--force" in err
    assert existing.read_text() == "keep me"
    assert (tmp_path / "telethon.session").read_text() == "keep me"


def test_no_session_at_the_source_exits_3_whatever_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RTG_NO_SUCH_VARIABLE", raising=False)
    target = (tmp_path / "target.json").as_uri()
    missing = tmp_path / "missing.json"
    outcomes = [
        run(capsys, "session", "export", missing.as_uri(), "--json", "--stdout"),
        run(capsys, "session", "import", str(missing), target),
        run(capsys, "session", "copy", missing.as_uri(), target),
        run(capsys, "session", "import", "--string-env", "RTG_NO_SUCH_VARIABLE", target),
    ]
    for code, err in outcomes:
        assert code == 3, err
    assert not (tmp_path / "target.json").exists()


def test_a_bad_store_url_exits_2_in_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_API_ID", "1")
    monkeypatch.setenv("TG_API_HASH", "abc")
    good = session(tmp_path / "good.json").as_uri()
    outcomes = [
        run(capsys, "login", "ftp://x", "--phone", "+15550001"),
        run(capsys, "session", "export", "ftp://x", "--json", "--stdout"),
        run(capsys, "session", "import", str(tmp_path / "good.json"), "ftp://x"),
        run(capsys, "session", "copy", good, "ftp://x"),
        run(capsys, "session", "copy", "ftp://x", good),
    ]
    for code, err in outcomes:
        assert code == 2, err
        assert "bad store URL" in err


def test_a_target_that_cannot_keep_a_session_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_API_ID", "1")
    monkeypatch.setenv("TG_API_HASH", "abc")
    source = session(tmp_path / "source.json")
    for target in ("memory://", "env://RTG_SESSION"):
        assert run(capsys, "login", target, "--phone", "+15550001")[0] == 2
        assert run(capsys, "session", "copy", source.as_uri(), target)[0] == 2
        assert run(capsys, "session", "import", str(source), target)[0] == 2


def test_login_into_a_store_holding_another_servers_session_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like import into a store that holds a session: the target's state, not the
    arguments, is what stops it."""
    monkeypatch.setenv("TG_API_ID", "1")
    monkeypatch.setenv("TG_API_HASH", "abc")
    taken = session(tmp_path / "taken.json", port=443)
    pem = tmp_path / "server.pem"
    pem.write_text(_a_public_key_pem())
    code, err = run(
        capsys,
        "login",
        taken.as_uri(),
        "--test-server",
        "127.0.0.1:1",
        "--test-server-key",
        str(pem),
        "--phone",
        "+15550001",
    )
    assert code == 3, err
    assert "log in into another store" in err


def test_check_exits_3_without_a_session_and_2_for_a_bad_url(tmp_path: Path) -> None:
    """As the session commands do (a subprocess: check sets up its own logging)."""
    command = [sys.executable, "-m", "resilient_tg.cli", "check"]
    command += ["--api-id", "1", "--api-hash", "abc"]
    empty = tmp_path / "empty.json"
    empty.touch()
    for target, code in ((tmp_path / "missing.json", 3), (empty, 3), ("ftp://x", 2)):
        result = subprocess.run(
            [*command, str(target)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == code, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _a_public_key_pem() -> str:
    """An RSA public key in the PEM form `resilient-tg test-server` writes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
