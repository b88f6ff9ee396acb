"""`resilient-tg test-server`: a standalone MTProtoTestServer in its own process."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resilient_tg.cli import _SUBCOMMANDS, main

# Bounds every wait on a child process; a hang fails the test instead of blocking CI.
PROCESS_TIMEOUT = 30.0


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "resilient_tg.cli", *args]


class ServerProcess:
    """``resilient-tg test-server`` in a child process; its stdout is read by a thread
    that collects the connection info and every login code it prints."""

    def __init__(self, *args: str, as_json: bool = True) -> None:
        self.proc = subprocess.Popen(
            cli_command("test-server", *(["--json"] if as_json else []), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.codes: dict[str, list[str]] = collections.defaultdict(list)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.info: dict[str, Any] = {}
        if as_json:
            self.info = json.loads(self.wait_line(lambda line: '"listening"' in line))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("{"):
                    event = json.loads(line)
                    if event["event"] == "login_code":
                        self.codes[event["phone"]].append(event["code"])
                elif line.startswith("login code for "):
                    phone, code = line[len("login code for ") :].strip().split(": ")
                    self.codes[phone].append(code)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_line(self, match: Any, timeout: float = PROCESS_TIMEOUT) -> str:
        """The first stdout line for which ``match(line)`` is true."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no such line from test-server; got {self.lines!r}, "
                        f"stderr: {self._stderr_if_dead()}"
                    )
                self._changed.wait(remaining)

    def wait_code(self, phone: str, count: int = 1, timeout: float = PROCESS_TIMEOUT) -> str:
        """The ``count``-th login code the server sent to ``phone``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.codes[phone]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no login code for {phone} within {timeout}s")
                self._changed.wait(remaining)
            return self.codes[phone][count - 1]

    def _stderr_if_dead(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the server and wait for it; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(PROCESS_TIMEOUT)
            raise
        self._reader.join(PROCESS_TIMEOUT)
        assert self.proc.stderr is not None
        assert self.proc.stdout is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.stdout.close()
        return self.proc.returncode, err


def test_json_line_describes_the_server_and_sigterm_stops_it(tmp_path: Path) -> None:
    server = ServerProcess(
        "--user",
        "+15550001:Alice:pw",
        "--user",
        "+15550002:Bob",
        "--bot",
        "echo_bot",
        "--data-dir",
        str(tmp_path),
    )
    try:
        info = server.info
        assert info["host"] == "127.0.0.1"
        assert info["port"] > 0
        assert info["dc_id"] == 2
        assert info["api_id"] == 12345
        assert len(info["api_hash"]) == 32
        pem = Path(info["public_key_file"])
        assert pem.parent == tmp_path
        assert "BEGIN RSA PUBLIC KEY" in pem.read_text()
        users = {u["phone"]: u for u in info["users"]}
        assert users["+15550001"]["has_password"] is True
        assert users["+15550002"]["has_password"] is False
        assert users["+15550002"]["first_name"] == "Bob"
        (bot,) = info["bots"]
        assert bot["username"] == "echo_bot"
        assert bot["token"].startswith(f"{bot['id']}:")
        assert f"--test-server 127.0.0.1:{info['port']}" in info["login_command"]
        assert f"--test-server-key {pem}" in info["login_command"]
        assert "trust_test_server" in info["python"]
    finally:
        code, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "stopped" in err


def test_data_dir_keeps_accounts_keys_and_api_hash_across_runs(tmp_path: Path) -> None:
    first = ServerProcess("--user", "+15550001:Alice:pw", "--data-dir", str(tmp_path))
    info = first.info
    assert first.stop(signal.SIGINT)[0] == 0
    second = ServerProcess("--data-dir", str(tmp_path))
    try:
        again = second.info
        assert again["api_hash"] == info["api_hash"]
        assert (
            Path(again["public_key_file"]).read_text() == Path(info["public_key_file"]).read_text()
        )
        assert [(u["phone"], u["has_password"]) for u in again["users"]] == [("+15550001", True)]
    finally:
        assert second.stop()[0] == 0


def test_human_output_tells_how_to_connect_and_the_python_snippet_works(
    tmp_path: Path,
) -> None:
    server = ServerProcess("--user", "+15550001:Alice", as_json=False)
    try:
        server.wait_line(lambda line: line.startswith("Login codes appear below"))
        text = "\n".join(server.lines)
        assert "MTProto test server listening on 127.0.0.1:" in text
        assert "api_hash" in text
        assert "public key" in text
        login_line = next(line for line in server.lines if "resilient-tg login" in line)
        assert "--test-server 127.0.0.1:" in login_line
        assert "--phone +15550001" in login_line
        start = server.lines.index(next(ln for ln in server.lines if ln.startswith("Or from")))
        snippet = [ln[2:] for ln in server.lines[start + 1 : start + 6]]
        assert len(snippet) == 5
        assert snippet[-1].startswith("client = ResilientClient(")
        script = tmp_path / "snippet.py"
        script.write_text(
            "\n".join(snippet)
            + "\nimport asyncio\n"
            + "async def main():\n"
            + "    async with client:\n"
            + "        await client.wait_connected(20)\n"
            + "        print('connected', client.health().authorized)\n"
            + "asyncio.run(main())\n"
        )
        run = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "connected False"
    finally:
        code, err = server.stop(signal.SIGINT)
    assert code == 0, err
    assert not Path(server.info.get("public_key_file", "/nonexistent")).exists()


def test_bad_user_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test-server", "--user", "nophone"]) == 2
    assert "PHONE:NAME" in capsys.readouterr().err


@pytest.mark.parametrize("command", [name.replace("_", "-") for name in _SUBCOMMANDS])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: resilient-tg {command}" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["export", "import", "copy"])
def test_every_session_action_has_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["session", action, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: resilient-tg session {action}" in out
    assert "exit codes" in out


def test_console_script_help_lists_the_commands() -> None:
    script = Path(sys.executable).parent / "resilient-tg"
    assert script.exists(), "the console script is installed with the package"
    run = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
        env={**os.environ},
    )
    assert run.returncode == 0, run.stderr
    for command in ("login", "session", "test-server", "exit codes"):
        assert command in run.stdout
