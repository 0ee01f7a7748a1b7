#!/usr/bin/env bash
# The test command: sets up and builds (scripts/setup.sh), installs what only the tests need (Debian's
# chromium, ~400 MB, for the headless report-rendering test), then runs the whole CTest suite.
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit  or  scripts/test.sh -LE slow
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if ! command -v chromium > /dev/null; then
  echo "test.sh: installing chromium for the report-rendering test"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium
fi
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
