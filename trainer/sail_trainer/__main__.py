"""`python -m sail_trainer` = `sail-trainer`."""

import sys

from sail_trainer.cli import main

sys.exit(main())
