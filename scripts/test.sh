#!/usr/bin/env bash
# The project's test command: sets up everything from nothing, then runs lint, the
# import contracts and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/test-deps.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/python scripts/function_lengths.py --check  # no function over 60 lines without a written reason
# One torch thread per worker: two pytest-xdist workers on two cores, no oversubscription.
# Load and soak tests are marked `heavy` and run only when asked: bash scripts/test.sh -m heavy
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Idle OpenMP threads sleep instead of spinning (a spinning thread takes the core its peers wait for on a
# loaded machine; docs/dev/threads.md has the figures). Inherited by every process the tests start.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest -n "${SAIL_TEST_WORKERS:-2}" --durations=25 "$@"
