"""``python -m judgeopt``: the same command line as ``judgeopt``."""

from judgeopt.cli import main

raise SystemExit(main())
