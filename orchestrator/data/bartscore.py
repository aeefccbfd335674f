"""``summeval.jsonl`` made from the BARTScore repository's ``SUM/SummEval/data.pkl``, read without running any code.

The pickle is a dict keyed by document id: ``{doc_id: {"src", "ref_summ", "ref_summs", "sys_summs": {system_id:
{"sys_summ", "scores": {criterion: mean of three experts}}}}}``, made of plain dicts, lists, strings and floats only.
It is read by an unpickler that resolves no global at all (no class, no function: a pickle that names one is refused),
and written as one JSON line per document, in the pickle's order, with no text or score changed.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

from judgeopt.orchestrator.errors import DataError

SUMMEVAL_SCORE_KEYS = ("coherence", "consistency", "fluency", "relevance")  # key order of the written file


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Plain data only: every opcode that would import a name (GLOBAL, STACK_GLOBAL, the copyreg extensions) ends
    here and is refused, so neither REDUCE nor BUILD ever has a callable to call. Persistent ids are refused by the
    base class, which has no ``persistent_load``."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names the global {module}.{name}, and a data pickle may name none")


def load_plain_pickle(origin: str, data: bytes) -> Any:
    """The object a pickle of plain data holds; anything else is one ``DataError`` line."""
    try:
        return _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, MemoryError) as exc:
        raise DataError(f"{origin}: refused to unpickle: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def summeval_jsonl(origin: str, data: bytes) -> bytes:
    """The bytes of ``summeval.jsonl`` from the bytes of BARTScore's SummEval ``data.pkl``."""
    docs = load_plain_pickle(origin, data)
    if not isinstance(docs, dict):
        raise DataError(f"{origin}: expected a dict of documents, found {type(docs).__name__}")
    lines = []
    for doc_id, doc in docs.items():
        try:
            summaries = [
                {
                    "system_id": system_id,
                    "summary": system["sys_summ"],
                    "scores": {key: system["scores"][key] for key in SUMMEVAL_SCORE_KEYS},
                }
                for system_id, system in doc["sys_summs"].items()
            ]
            record = {
                "doc_id": doc_id,
                "source": doc["src"],
                "reference": doc["ref_summ"],
                "references": doc["ref_summs"],
                "summaries": summaries,
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{origin}: document {doc_id!r}: not a BARTScore SummEval record ({exc!r})") from None
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode()
