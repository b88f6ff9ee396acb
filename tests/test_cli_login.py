"""`resilient-tg login` as users run it: a real process against a test-server process,
answers piped on stdin, the login code read from the server's output."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from telethon.crypto import AuthKey

from resilient_tg import ResilientClient
from resilient_tg._cli._common import CliError
from resilient_tg._cli.login import LoginOptions, Prompter, login
from resilient_tg.cli import main
from resilient_tg.stores import FileStore, SessionData
from resilient_tg.testing import FaultProxy, MTProtoTestServer, trust_test_server

from .conftest import wait_until
from .porttools import refused_port
from .test_cli_test_server import PROCESS_TIMEOUT, ServerProcess, cli_command

ALICE = "+15550101"  # 2FA
BOB = "+15550102"
CAROL = "+15550103"  # 2FA, wrong passwords
DAVE = "+15550104"
ERIN = "+15550105"
FRANK = "+15550106"  # 2FA, on a terminal
FRANK_PASSWORD = "frank-tty-secret"
GRACE = "+15550107"  # a wrong code, then a new login
HEIDI = "+15550108"  # interrupted at the code prompt
ALICE_PASSWORD = "alice: correct horse"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        "--user",
        f"{ALICE}:Alice:{ALICE_PASSWORD}",
        "--user",
        f"{BOB}:Bob",
        "--user",
        f"{CAROL}:Carol:carol-pw",
        "--user",
        f"{DAVE}:Dave",
        "--user",
        f"{ERIN}:Erin",
        "--user",
        f"{FRANK}:Frank:{FRANK_PASSWORD}",
        "--user",
        f"{GRACE}:Grace",
        "--user",
        f"{HEIDI}:Heidi",
        "--bot",
        "echo_bot",
    )
    # This process checks what the logins stored by connecting to the server itself.
    trust_test_server(Path(process.info["public_key_file"]).read_text())
    yield process
    code, err = process.stop()
    assert code == 0, err


def start_login(server: ServerProcess, store_url: str, *args: str) -> subprocess.Popen[str]:
    info = server.info
    env = {**os.environ, "TG_API_ID": str(info["api_id"]), "TG_API_HASH": info["api_hash"]}
    return subprocess.Popen(
        cli_command(
            "login",
            store_url,
            "--test-server",
            f"{info['host']}:{info['port']}",
            "--test-server-key",
            info["public_key_file"],
            *args,
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(login: subprocess.Popen[str], answers: str = "") -> tuple[int, str, str]:
    try:
        out, err = login.communicate(answers, timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        login.kill()
        login.communicate()
        raise
    return login.returncode, out, err


async def _authorized(server: ServerProcess, path: Path) -> tuple[bool | None, int]:
    info = server.info
    async with ResilientClient(FileStore(path), info["api_id"], info["api_hash"]) as client:
        await client.wait_connected(PROCESS_TIMEOUT)
        authorized = client.health().authorized
        me = await client.telegram.get_me() if authorized else None
        return authorized, me.id if me is not None else 0


def stored(path: Path) -> SessionData:
    data = asyncio.run(FileStore(path).load())
    assert data is not None
    return data


def assert_no_secrets(server: ServerProcess, text: str, *secrets: str, path: Path) -> None:
    key = stored(path).auth_key
    assert key is not None
    for secret in (
        server.info["api_hash"],
        key.hex(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        *secrets,
    ):
        assert secret not in text


def user_id(server: ServerProcess, phone: str) -> int:
    return next(int(u["id"]) for u in server.info["users"] if u["phone"] == phone)


def test_login_with_code_and_2fa_password_from_pipes(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "alice.json"
    login = start_login(server, path.as_uri(), "--phone", ALICE)
    code = server.wait_code(ALICE)
    status, out, err = finish(login, f"{code}\n{ALICE_PASSWORD}\n")
    assert status == 0, err
    assert "logged in as Alice" in out
    assert "two-step verification" in err
    assert_no_secrets(server, out + err, ALICE_PASSWORD, path=path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert asyncio.run(_authorized(server, path)) == (True, user_id(server, ALICE))

    # Once logged in, login leaves the store alone (idempotent for deploy scripts).
    again = start_login(server, path.as_uri(), "--phone", ALICE)
    status, out, err = finish(again)
    assert status == 0, err
    assert "already logged in as Alice" in out


def test_code_retry_then_success_without_password(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "bob.json"
    login = start_login(server, path.as_uri(), "--phone", BOB, "--verbose")
    code = server.wait_code(BOB)
    status, out, err = finish(login, f"0\n{code}\n")
    assert status == 0, err
    assert "Wrong code; 2 attempts left." in err
    assert "connected to 127.0.0.1" in err  # --verbose logs the client's transitions
    assert_no_secrets(server, out + err, path=path)
    assert asyncio.run(_authorized(server, path))[0] is True


def test_phone_is_asked_for_when_not_given(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "erin.json"
    login = start_login(server, path.as_uri())
    assert login.stdin is not None
    login.stdin.write(f"{ERIN}\n")
    login.stdin.flush()
    code = server.wait_code(ERIN)
    status, out, err = finish(login, f"{code}\n")
    assert status == 0, err
    assert "Phone number" in err
    assert "logged in as Erin" in out


def test_bot_login_reads_the_token_from_stdin(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "bot.json"
    (bot,) = server.info["bots"]
    login = start_login(server, path.as_uri(), "--bot")
    status, out, err = finish(login, bot["token"] + "\n")
    assert status == 0, err
    assert "logged in as bot echo_bot" in out
    assert_no_secrets(server, out + err, bot["token"], path=path)
    assert asyncio.run(_authorized(server, path)) == (True, bot["id"])


def test_bot_token_option_and_a_refused_token(server: ServerProcess, tmp_path: Path) -> None:
    (bot,) = server.info["bots"]
    ok = start_login(server, (tmp_path / "a.json").as_uri(), "--bot-token", bot["token"])
    assert finish(ok)[0] == 0
    bad_token = f"{bot['id']}:not-the-token"
    refused = start_login(server, (tmp_path / "b.json").as_uri(), "--bot-token", bad_token)
    status, _out, err = finish(refused)
    assert status == 4
    assert "bot token was refused" in err
    assert bad_token not in err


def test_wrong_code_three_times_exits_4(server: ServerProcess, tmp_path: Path) -> None:
    login = start_login(server, (tmp_path / "dave.json").as_uri(), "--phone", DAVE)
    status, _out, err = finish(login, "0\n1\n\n")
    assert status == 4, err
    assert err.count("Wrong code") == 2
    assert "wrong code 3 times; login failed" in err


def test_wrong_password_three_times_exits_4(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "carol.json"
    login = start_login(server, path.as_uri(), "--phone", CAROL)
    code = server.wait_code(CAROL)
    status, _out, err = finish(login, f"{code}\nnope\nstill-no\nno\n")
    assert status == 4, err
    assert "wrong password 3 times" in err
    assert "nope" not in err
    assert "still-no" not in err


def test_store_in_use_exits_3_naming_the_holder(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "held.json"
    store = FileStore(path)
    asyncio.run(store.acquire_lease("gateway-7:4242:feed", 60.0))
    try:
        started = time.monotonic()
        status, _out, err = finish(start_login(server, path.as_uri(), "--phone", DAVE))
        assert time.monotonic() - started < PROCESS_TIMEOUT / 2  # at once, not waiting
    finally:
        asyncio.run(store.release_lease("gateway-7:4242:feed"))
    assert status == 3, err
    assert "gateway-7:4242:feed" in err


def test_unreachable_server_exits_5_after_timeout(server: ServerProcess, tmp_path: Path) -> None:
    with refused_port() as closed_port:
        info = server.info
        run = subprocess.run(
            cli_command(
                "login",
                (tmp_path / "x.json").as_uri(),
                "--test-server",
                f"127.0.0.1:{closed_port}",
                "--test-server-key",
                info["public_key_file"],
                "--phone",
                DAVE,
                "--timeout",
                "1",
            ),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            env={**os.environ, "TG_API_ID": "1", "TG_API_HASH": "secret-api-hash-value"},
            check=False,
        )
        assert run.returncode == 5, run.stderr
        assert f"could not connect to 127.0.0.1:{closed_port} within 1s" in run.stderr
        assert "secret-api-hash-value" not in run.stderr + run.stdout


@pytest.mark.parametrize("wrong", ["api_id", "api_hash"])
def test_refused_app_credentials_exit_6_at_once(
    server: ServerProcess, tmp_path: Path, wrong: str
) -> None:
    """A wrong api_id is refused at initConnection (REJECTED), a wrong api_hash at
    auth.sendCode: both are the app's credentials, one exit code, no --timeout wait."""
    info = server.info
    api_id = info["api_id"] + (1 if wrong == "api_id" else 0)
    api_hash = "0" * 32 if wrong == "api_hash" else info["api_hash"]
    started = time.monotonic()
    run = subprocess.run(
        cli_command(
            "login",
            (tmp_path / "x.json").as_uri(),
            "--test-server",
            f"{info['host']}:{info['port']}",
            "--test-server-key",
            info["public_key_file"],
            "--phone",
            DAVE,
            "--timeout",
            "30",
        ),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env={**os.environ, "TG_API_ID": str(api_id), "TG_API_HASH": api_hash},
        check=False,
    )
    assert run.returncode == 6, run.stderr
    assert "API_ID_INVALID" in run.stderr
    assert "refuses this api_id/api_hash" in run.stderr
    assert time.monotonic() - started < 15  # not the 30 s --timeout
    assert api_hash not in run.stderr + run.stdout
    assert "(a bug)" not in run.stderr


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TG_API_ID", raising=False)
    monkeypatch.delenv("TG_API_HASH", raising=False)
    url = (tmp_path / "s.json").as_uri()
    assert main(["login", url, "--phone", DAVE]) == 2
    assert "TG_API_ID" in capsys.readouterr().err
    monkeypatch.setenv("TG_API_ID", "1")
    monkeypatch.setenv("TG_API_HASH", "abc")
    assert main(["login", url, "--test-server", "127.0.0.1:1"]) == 2
    assert "--test-server-key" in capsys.readouterr().err
    assert main(["login", url, "--test-server", "nonsense", "--test-server-key", "x"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["login", "ftp://x", "--phone", DAVE]) == 2
    assert "bad store URL" in capsys.readouterr().err
    assert main(["login", "memory://", "--phone", DAVE]) == 2
    assert "lasting store" in capsys.readouterr().err


def test_on_a_terminal_the_password_is_not_echoed(server: ServerProcess, tmp_path: Path) -> None:
    """A real pseudo-terminal: the code is echoed as typed, the 2FA password is not."""
    import pty
    import select

    info = server.info
    master, slave = pty.openpty()
    login = subprocess.Popen(
        cli_command(
            "login",
            (tmp_path / "tty.json").as_uri(),
            "--test-server",
            f"{info['host']}:{info['port']}",
            "--test-server-key",
            info["public_key_file"],
            "--phone",
            FRANK,
        ),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TG_API_ID": str(info["api_id"]), "TG_API_HASH": info["api_hash"]},
        start_new_session=True,
    )
    os.close(slave)
    screen = b""

    def read_until(text: bytes) -> None:
        nonlocal screen
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while text not in screen:
            assert time.monotonic() < deadline, screen
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    assert text in screen, screen
                    return

    try:
        read_until(b"Login code: ")
        code = server.wait_code(FRANK)
        os.write(master, f"{code}\r".encode())
        read_until(b"2FA password: ")
        os.write(master, f"{FRANK_PASSWORD}\r".encode())
        read_until(b"logged in as Frank")
        assert login.wait(PROCESS_TIMEOUT) == 0
    finally:
        if login.poll() is None:
            login.kill()
            login.wait()
        os.close(master)
    assert code.encode() in screen  # typed text is echoed...
    assert FRANK_PASSWORD.encode() not in screen  # ...but not the password


DISCARDED = "Discarded the never-authorized auth key"


def test_after_wrong_codes_the_store_connects_unauthorized_and_a_new_login_works(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A failed login leaves a never-authorized key: a client is CONNECTED with
    authorized False (not AUTH_LOST), and the next login discards the key and succeeds."""
    path = tmp_path / "grace.json"
    status, _out, err = finish(start_login(server, path.as_uri(), "--phone", GRACE), "0\n1\n\n")
    assert status == 4, err
    failed = stored(path)
    assert failed.auth_key is not None
    assert failed.ever_authorized is False
    assert failed.update_state is None
    assert asyncio.run(_authorized(server, path)) == (False, 0)

    again = start_login(server, path.as_uri(), "--phone", GRACE)
    code = server.wait_code(GRACE, count=2)
    status, out, err = finish(again, f"{code}\n")
    assert status == 0, err
    assert "logged in as Grace" in out
    assert err.count(DISCARDED) == 1
    assert_no_secrets(server, out + err, path=path)
    logged_in = stored(path)
    assert logged_in.ever_authorized is True
    assert logged_in.auth_key != failed.auth_key
    assert asyncio.run(_authorized(server, path)) == (True, user_id(server, GRACE))


def test_a_login_interrupted_at_the_code_prompt_can_be_run_again(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "heidi.json"
    login = start_login(server, path.as_uri(), "--phone", HEIDI)
    server.wait_code(HEIDI)
    login.send_signal(signal.SIGINT)
    try:
        status = login.wait(PROCESS_TIMEOUT)  # stdin stays open: no end-of-input
    finally:
        if login.poll() is None:
            login.kill()
    _out, err = login.communicate()
    assert status == 130, err
    assert stored(path).ever_authorized is False
    assert stored(path).update_state is None
    assert asyncio.run(_authorized(server, path)) == (False, 0)

    again = start_login(server, path.as_uri(), "--phone", HEIDI)
    code = server.wait_code(HEIDI, count=2)
    status, out, err = finish(again, f"{code}\n")
    assert status == 0, err
    assert "logged in as Heidi" in out
    assert err.count(DISCARDED) == 1


class _CodeFromServer:
    """Standard input that answers the code prompt with the code the server sent."""

    def __init__(self, server: MTProtoTestServer, phone: str) -> None:
        self._server = server
        self._phone = phone

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self._server.login_code(self._phone) + "\n"


@pytest.mark.anyio
async def test_login_replaces_a_never_authorized_key_the_server_forgot(
    mtproto_server: MTProtoTestServer, tmp_path: Path
) -> None:
    """-404 for a never-authorized key: the client makes a new key, and login says so."""
    ivan = mtproto_server.create_user("+15550109", "Ivan")
    path = tmp_path / "ivan.json"
    stale = mtproto_server.issue_auth_key()
    await FileStore(path).save(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=mtproto_server.host,
            port=mtproto_server.port,
            auth_key=stale,
        )
    )
    mtproto_server.forget_auth_keys()
    options = LoginOptions(
        store_url=path.as_uri(),
        api_id=mtproto_server.api_id,
        api_hash=mtproto_server.api_hash,
        phone=ivan.phone,
        bot=False,
        bot_token=None,
        test_server=(mtproto_server.host, mtproto_server.port),
        test_server_pem=None,
        timeout=PROCESS_TIMEOUT,
    )
    stderr = io.StringIO()
    assert await login(options, Prompter(_CodeFromServer(mtproto_server, ivan.phone), stderr)) == 0
    assert stderr.getvalue().count(DISCARDED) == 1
    data = await FileStore(path).load()
    assert data is not None
    assert data.auth_key not in (None, stale)
    assert data.ever_authorized is True


@pytest.mark.anyio
async def test_login_on_a_revoked_key_exits_4_and_says_what_to_do(
    mtproto_server: MTProtoTestServer, tmp_path: Path
) -> None:
    """A key that was logged in and then revoked is not discarded: it is reported."""
    judy = mtproto_server.create_user("+15550110", "Judy")
    path = tmp_path / "judy.json"
    key = mtproto_server.issue_auth_key(judy.id)
    await FileStore(path).save(
        SessionData(
            dc_id=mtproto_server.dc_id,
            server_address=mtproto_server.host,
            port=mtproto_server.port,
            auth_key=key,
            ever_authorized=True,
        )
    )
    mtproto_server.revoke_auth_keys(judy.id)
    before = path.read_bytes()
    options = LoginOptions(
        store_url=path.as_uri(),
        api_id=mtproto_server.api_id,
        api_hash=mtproto_server.api_hash,
        phone=judy.phone,
        bot=False,
        bot_token=None,
        test_server=(mtproto_server.host, mtproto_server.port),
        test_server_pem=None,
        timeout=PROCESS_TIMEOUT,
    )
    stderr = io.StringIO()
    with pytest.raises(CliError) as info:
        await login(options, Prompter(_CodeFromServer(mtproto_server, judy.phone), stderr))
    assert info.value.code == 4
    message = str(info.value)
    assert "AUTH_KEY_UNREGISTERED" in message
    assert "revoked" in message
    assert message.count(path.as_uri()) == 1
    assert DISCARDED not in stderr.getvalue()
    assert path.read_bytes() == before


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [None, "refuse"])
async def test_login_of_an_account_on_another_dc_moves_the_store_there(
    tmp_path: Path, fault: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The store is seeded with DC 2; the account lives on DC 4 (behind a FaultProxy, which
    refuses while the session moves there in the second case): login follows the
    server's PHONE_MIGRATE_4 under supervision, and the store ends on DC 4 with a key DC 4
    made, which the next client uses straight away."""
    async with MTProtoTestServer(dcs=4) as server, FaultProxy(*server.dc_address(4)) as proxy:
        server.advertise(4, proxy.host, proxy.port)
        kim = server.create_user("+15550411", "Kim", dc_id=4)
        path = tmp_path / "kim.json"
        options = LoginOptions(
            store_url=path.as_uri(),
            api_id=server.api_id,
            api_hash=server.api_hash,
            phone=kim.phone,
            bot=False,
            bot_token=None,
            test_server=(server.host, server.port),
            test_server_pem=None,
            timeout=PROCESS_TIMEOUT,
        )
        if fault == "refuse":
            proxy.refuse(60.0)  # healed once an attempt to DC 4 was refused
        stderr = io.StringIO()
        prompter = Prompter(_CodeFromServer(server, kim.phone), stderr)
        with caplog.at_level(logging.INFO, logger="resilient_tg.client"):
            async with anyio.create_task_group() as tg:
                codes: list[int] = []

                async def run_login() -> None:
                    codes.append(await login(options, prompter))

                tg.start_soon(run_login)
                if fault == "refuse":
                    await wait_until(
                        lambda: any("refused" in r.getMessage().lower() for r in caplog.records)
                    )
                    proxy.heal()
            assert codes == [0]
        lines = [r.getMessage() for r in caplog.records if r.name == "resilient_tg.client"]
        moved = [i for i, line in enumerate(lines) if "moved the session from DC 2 to DC 4" in line]
        assert len(moved) == 1, lines
        if fault == "refuse":
            assert any("refused" in line.lower() for line in lines[moved[0] :]), lines
        assert [r.dc_id for r in server.requests_for("auth.signIn")] == [4]
        data = await FileStore(path).load()
        assert data is not None
        assert (data.dc_id, data.server_address, data.port) == (4, proxy.host, proxy.port)
        assert data.auth_key is not None
        assert data.ever_authorized is True
        key_id = AuthKey(data.auth_key).key_id
        assert {r.dc_id for r in server.requests if r.auth_key_id == key_id} == {4}

        server.clear_requests()
        async with ResilientClient(FileStore(path), server.api_id, server.api_hash) as client:
            await client.wait_connected(PROCESS_TIMEOUT)
            assert client.health().authorized is True
            assert client.health().dc_id == 4
        assert {r.dc_id for r in server.requests} == {4}


LENA = "+15550412"


def test_login_process_follows_the_account_to_its_dc_and_a_second_run_finds_it(
    tmp_path: Path,
) -> None:
    """`resilient-tg login` against a `test-server --dcs 4 --home-dc 4` process: the
    store seeded with DC 2 ends on DC 4, and running login again says "already logged
    in" (the store's server is DC 4 of the same test server)."""
    process = ServerProcess("--dcs", "4", "--home-dc", "4", "--user", f"{LENA}:Lena")
    try:
        trust_test_server(Path(process.info["public_key_file"]).read_text())
        dc4 = next(d for d in process.info["dcs"] if d["id"] == 4)
        path = tmp_path / "lena.json"
        login = start_login(process, path.as_uri(), "--phone", LENA)
        code = process.wait_code(LENA)
        status, out, err = finish(login, f"{code}\n")
        assert status == 0, err
        assert "logged in as Lena" in out
        data = stored(path)
        assert (data.dc_id, data.server_address, data.port) == (4, dc4["host"], dc4["port"])
        assert data.ever_authorized is True
        assert asyncio.run(_authorized(process, path)) == (True, user_id(process, LENA))

        again = start_login(process, path.as_uri(), "--phone", LENA)
        status, out, err = finish(again)
        assert status == 0, err
        assert "already logged in as Lena" in out
    finally:
        code_, err = process.stop()
    assert code_ == 0, err


@pytest.mark.anyio
async def test_a_store_of_another_server_is_still_refused(
    mtproto_server: MTProtoTestServer, tmp_path: Path
) -> None:
    """Only a session on another DC of the same host passes as the test server's: a DC 2
    session at another address is another server, and login leaves it alone."""
    path = tmp_path / "other.json"
    key = mtproto_server.issue_auth_key()
    await FileStore(path).save(
        SessionData(dc_id=2, server_address=mtproto_server.host, port=1, auth_key=key)
    )
    before = path.read_bytes()
    options = LoginOptions(
        store_url=path.as_uri(),
        api_id=mtproto_server.api_id,
        api_hash=mtproto_server.api_hash,
        phone="+15550499",
        bot=False,
        bot_token=None,
        test_server=(mtproto_server.host, mtproto_server.port),
        test_server_pem=None,
        timeout=PROCESS_TIMEOUT,
    )
    with pytest.raises(CliError) as info:
        await login(options, Prompter(io.StringIO(), io.StringIO()))
    assert info.value.code == 3
    assert "not for the test server" in str(info.value)
    assert path.read_bytes() == before
