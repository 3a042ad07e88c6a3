"""``python -m hallstats.cli``: what the installed ``hallstats`` script runs."""

from hallstats.cli.main import main

raise SystemExit(main())
