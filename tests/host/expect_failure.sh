#!/usr/bin/env bash
# Usage: expect_failure.sh REGEX COMMAND... : passes when COMMAND exits non-zero (and not by a signal/crash)
# and its stderr+stdout match REGEX (grep -E).
set -u
regex=$1; shift
out=$("$@" 2>&1); rc=$?
if [ $rc -eq 0 ]; then echo "expected a failure, got exit 0. Output:"; echo "$out"; exit 1; fi
if [ $rc -ge 128 ]; then echo "crashed with exit $rc (signal). Output:"; echo "$out"; exit 1; fi
if ! grep -qE -- "$regex" <<<"$out"; then echo "exit $rc but output does not match /$regex/:"; echo "$out"; exit 1; fi
echo "ok: exit $rc, matched /$regex/"
