"""`python -m sail_operator ...` is the `sail` command."""

from sail_operator.cli import main

raise SystemExit(main())
