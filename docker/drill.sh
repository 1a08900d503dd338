#!/usr/bin/env bash
# The Docker deployment drill (issue 17): build, compose up, use, break and take down the stack.
# From a clean machine, without Docker Hub:  docker/drill.sh --local-images
# Options and phases: docker/drill.py --help. Exits non-zero on any failure; prints each phase's time.
set -euo pipefail
exec python3 "$(dirname "$0")/drill.py" "$@"
