#!/usr/bin/env bash
# The test command (README, CI): install what is needed, then run every test
# against real peers (DCMTK, Orthanc, RabbitMQ) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec python3 -m pytest -n 2 --timeout 600 -q tests "$@"
