"""The docs show the first login of a ResilientClient against the test server (an empty
store would dial Telegram's production DC), and the script they show runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
HEADING = "## The first login of a ResilientClient against the test server"


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_the_first_login_script_in_testing_md_logs_in_to_the_test_server(tmp_path: Path) -> None:
    (code,) = re.findall(
        r"```python\n(.*?)```", section((DOCS / "testing.md").read_text(), HEADING), re.S
    )
    assert "SessionData(dc_id=server.dc_id, server_address=server.host, port=server.port)" in code
    script = tmp_path / "first_login.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "logged in as Alice"


def test_the_quick_start_shows_how_to_seed_a_store_for_the_test_server() -> None:
    text = (DOCS / "quickstart.md").read_text()
    assert "--test-server 127.0.0.1:PORT --test-server-key" in text
    assert 'SessionData(dc_id=2, server_address="127.0.0.1", port=PORT)' in text
    assert "testing.md#the-first-login-of-a-resilientclient-against-the-test-server" in text
