"""The public surface: sorted, explicit exports that all import."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import resilient_tg


@pytest.mark.parametrize(
    "module", ["resilient_tg", "resilient_tg.cache", "resilient_tg.fleet", "resilient_tg.testing"]
)
def test_all_is_sorted_and_every_name_imports(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert names == sorted(names)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name} is listed in __all__ but missing"


def test_errors_share_one_root() -> None:
    for name in (
        "SessionCorruptError",
        "SessionInUseError",
        "LeaseLostError",
        "AuthLostError",
        "AppRejectedError",
        "NotConnectedError",
        "ResultLostError",
        "ResultUnknownError",
        "FleetError",
        "AccountExistsError",
        "UnknownAccountError",
    ):
        assert issubclass(getattr(resilient_tg, name), resilient_tg.ResilientTgError)


def test_version_is_a_string() -> None:
    assert isinstance(resilient_tg.__version__, str)
    assert resilient_tg.__version__[0].isdigit()


def test_importing_testing_trusts_no_key_and_starts_nothing() -> None:
    """In a clean interpreter, importing the testing package and its pytest plugin leaves
    Telethon's trusted keys and the running threads as they were."""
    code = textwrap.dedent(
        """
        import threading
        from telethon.crypto import rsa
        before, threads = set(rsa._server_keys), threading.active_count()
        import resilient_tg.testing, resilient_tg.testing.pytest_plugin
        assert set(rsa._server_keys) == before, "a key became trusted on import"
        assert threading.active_count() == threads, "a thread started on import"
        print(len(before))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 1  # Telegram's own keys are there
