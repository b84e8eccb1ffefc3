#!/usr/bin/env bash
# The quick start: set up the environment, run the toy SAILRun on this machine with the
# embedded default executor, and print where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
SAIL_EXTRAS=train,operator bash scripts/setup.sh
.venv/bin/sail run examples/quickstart.yaml "$@"
.venv/bin/sail report examples/.sail/toy-quickstart
# Last: the run's state, the path of the final model (a diffusers folder) and the held-out verdict.
.venv/bin/sail status examples/.sail/toy-quickstart
