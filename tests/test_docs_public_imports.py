"""The docs and examples import only public names: no `resilient_tg` module or name with
a leading underscore, which may change in any release."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `from resilient_tg.x._y import z`, `import resilient_tg._y`, and `from resilient_tg.x
# import _z` (parenthesised lists included).
_MODULE = re.compile(r"^\s*(?:from|import)\s+(resilient_tg(?:\.\w+)*)", re.MULTILINE)
_NAMES = re.compile(
    r"^\s*from\s+resilient_tg(?:\.\w+)*\s+import\s+(\([^)]*\)|[^\n]*)", re.MULTILINE
)


def private_imports(text: str) -> list[str]:
    found = []
    for match in _MODULE.finditer(text):
        module = match.group(1)
        if any(part.startswith("_") for part in module.split(".")):
            found.append(module)
    for match in _NAMES.finditer(text):
        names = re.sub(r"#[^\n]*", "", match.group(1)).strip("()")
        for item in names.split(","):
            name = item.split(" as ")[0].strip()
            if name.startswith("_"):
                found.append(name)
    return found


def sources() -> list[Path]:
    files = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "examples").rglob("*.py"))
    return [*files, ROOT / "README.md"]


def test_docs_and_examples_import_only_public_names() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sources()
        if (found := private_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_scan_finds_private_imports() -> None:
    text = """
    from resilient_tg.stores._data import decode
    import resilient_tg._client
    from resilient_tg.stores import (
        SessionData,
        _private,  # a comment
    )
    from resilient_tg import ResilientClient
    """
    assert private_imports(text) == [
        "resilient_tg.stores._data",
        "resilient_tg._client",
        "_private",
    ]
