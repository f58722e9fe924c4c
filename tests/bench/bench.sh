#!/usr/bin/env bash
# Kept for old habits: the benchmark is tests/bench/run.sh.
exec "$(dirname "$0")/run.sh" "$@"
