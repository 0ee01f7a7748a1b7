#!/usr/bin/env bash
# The test command: sets up and builds (scripts/setup.sh), then runs the whole CTest suite.
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit  or  scripts/test.sh -LE slow
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
