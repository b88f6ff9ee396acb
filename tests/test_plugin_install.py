"""The pytest11 plugin with only the core dependencies: installing resilient-tg (no
extras) must not break pytest in a project that never uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_core_install_keeps_pytest_working_in_an_unrelated_project(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    installed = _run([python, "-m", "pip", "install", "-q", str(ROOT), "pytest"], tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shown = _run([python, "-m", "pip", "show", "cryptography"], tmp_path)
    assert shown.returncode != 0, "cryptography came with the core install"
    assert "not found" in shown.stderr.lower()

    # The package imports, and what needs no cryptography works; the server says
    # which extra it needs.
    probe = _run(
        [
            python,
            "-c",
            "import resilient_tg.testing as t\n"
            "assert t.FaultProxy and t.trust_test_server\n"
            "try:\n    t.MTProtoTestServer\n"
            "except ImportError as exc:\n    print(exc)\n"
            "else:\n    raise SystemExit('the server imported without cryptography')\n",
        ],
        tmp_path,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "pip install 'resilient-tg[testing]'" in probe.stdout

    project = tmp_path / "project"
    project.mkdir()
    (project / "test_unrelated.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    result = _run([python, "-m", "pytest", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout

    # The plugin is loaded (its fixtures are offered) ...
    listed = _run([python, "-m", "pytest", "-p", "no:cacheprovider", "--fixtures"], project)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "mtproto_server" in listed.stdout
    # ... and using one without the extra names the extra to install.
    (project / "test_uses_server.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.anyio
            async def test_server(mtproto_server):
                pass
            """
        )
    )
    used = _run([python, "-m", "pytest", "-p", "no:cacheprovider", "test_uses_server.py"], project)
    assert used.returncode == 1, used.stdout + used.stderr
    assert "pip install 'resilient-tg[testing]'" in used.stdout
    assert "Traceback" not in used.stdout
