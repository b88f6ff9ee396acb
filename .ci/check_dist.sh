#!/usr/bin/env bash
# The distributions as users get them: build the sdist and the wheel (the wheel from
# the sdist, so the sdist is known to build), check their metadata as PyPI would
# (twine check), install the wheel into a fresh venv and import every public name, and
# check that the sdist holds what a source build and a reader need.
# Run by .ci/run; PYTHON is the interpreter with build and twine (the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building the sdist and the wheel"
if ! "$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    exit 1
fi
shopt -s nullglob
wheels=("$work"/dist/*.whl)
sdists=("$work"/dist/*.tar.gz)
if [ "${#wheels[@]}" -ne 1 ] || [ "${#sdists[@]}" -ne 1 ]; then
    echo "expected one wheel and one sdist, got: $(ls "$work/dist")" >&2
    exit 1
fi
echo "built $(basename "${wheels[0]}") and $(basename "${sdists[0]}")"

"$python" -m twine check --strict "$work"/dist/*

# What each must hold. The wheel: the package with its type marker. The sdist: the
# source, the metadata and the documents a reader of the source needs.
"$python" - "${wheels[0]}" "${sdists[0]}" <<'PY'
import sys
import tarfile
import zipfile

wheel, sdist = sys.argv[1], sys.argv[2]
in_wheel = set(zipfile.ZipFile(wheel).namelist())
missing = [p for p in ("resilient_tg/__init__.py", "resilient_tg/py.typed") if p not in in_wheel]
with tarfile.open(sdist) as tar:
    # Every member sits under one top directory, resilient_tg-<version>/.
    in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
needed = (
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "src/resilient_tg/__init__.py",
    "src/resilient_tg/py.typed",
    "src/resilient_tg/cli.py",
)
missing += [f"sdist: {p}" for p in needed if p not in in_sdist]
if missing:
    sys.exit(f"missing from the distributions: {', '.join(missing)}")
print(f"wheel: {len(in_wheel)} files; sdist: {len(in_sdist)} files, src/ and documents present")
PY

echo "installing the wheel into a fresh venv"
python3 -m venv "$work/venv"
# testing: resilient_tg.testing's server; sql: SQLStore, a public name of resilient_tg.stores
# (and SQLCacheBackend); redis: RedisCacheBackend, a public name of resilient_tg.cache.
"$work/venv/bin/pip" install -q --disable-pip-version-check "${wheels[0]}[testing,sql,redis]"
# From the temporary directory, so that the checkout's src/ cannot be imported instead.
(
    cd "$work"
    "$work/venv/bin/python" - <<'PY'
import importlib
import sys

failures = []
count = 0
for module_name in ("resilient_tg", "resilient_tg.cache", "resilient_tg.stores", "resilient_tg.testing"):
    module = importlib.import_module(module_name)
    if not module.__file__.startswith(sys.prefix):
        sys.exit(f"{module_name} was imported from {module.__file__}, not the installed wheel")
    for name in module.__all__:
        try:
            getattr(module, name)
        except Exception as exc:  # every failure, not only the first
            failures.append(f"{module_name}.{name}: {type(exc).__name__}: {exc}")
        count += 1
importlib.import_module("resilient_tg.testing.store_contract")
importlib.import_module("resilient_tg.testing.cache_contract")
if failures:
    sys.exit("public names that do not import:\n  " + "\n  ".join(failures))
print(f"imported {count} public names from the installed wheel")
PY
)
"$work/venv/bin/resilient-tg" --version
