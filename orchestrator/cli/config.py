"""``judgeopt config schema``: the JSON Schema of the config file (its ``run``, ``grid``, ``models`` and ``service``
sections), for editors and validators."""

from __future__ import annotations

import argparse

HELP = "about the config file: `schema` prints its JSON Schema"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["schema"], help="schema: the JSON Schema of the config file, on stdout")


def run(args: argparse.Namespace) -> int:
    import json

    from judgeopt.orchestrator.config import JudgeoptConfig

    schema = JudgeoptConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "judgeopt config file"
    print(json.dumps(schema, indent=2, sort_keys=False))
    return 0
