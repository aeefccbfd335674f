"""The orchestrator's commands, one module each. A command module exposes ``HELP`` (one line), ``add_arguments``
and ``run``; at import it loads only argparse and the light flag helpers, so ``judgeopt --help`` stays fast, and
``run`` imports what the command needs. ``judgeopt.cli`` assembles them (and ``serve``) into one command line."""
