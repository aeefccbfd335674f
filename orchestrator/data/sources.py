"""Where the built-in data files come from when no local copy exists: public files pinned to a commit, each checked
against a sha256 kept here, before and (for a converted file) after conversion.

- ``summeval.jsonl``: converted from ``SUM/SummEval/data.pkl`` of the BARTScore repository (neulab/BARTScore,
  Apache-2.0; the SummEval expert annotations of Fabbri et al. 2021 are MIT; the articles and references are
  CNN/DailyMail news text, for research and evaluation use). See ``bartscore.py`` for the conversion.
- ``wgc-summeval-split/{train,test}.parquet``: the exact split of "When Gradients Collide", copied byte for byte from
  ``expt/SummEval/SummEval-{train,test}.parquet`` of adivekar-utexas/when-gradients-collide (MIT).

Files are fetched from ``$JUDGEOPT_SOURCES_URL`` (default ``https://raw.githubusercontent.com/``) followed by
``<owner>/<repository>/<commit>/<path>``; setting it to a mirror (or a test's loopback server) changes only the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from judgeopt.orchestrator.data.bartscore import summeval_jsonl

SOURCES_URL_ENV = "JUDGEOPT_SOURCES_URL"
DEFAULT_SOURCES_URL = "https://raw.githubusercontent.com/"

BARTSCORE = ("neulab/BARTScore", "248f511cb34ae3753fc81f7d7a945de5bfe33458")
WHEN_GRADIENTS_COLLIDE = ("adivekar-utexas/when-gradients-collide", "1e9aeea68df81abd1ec0ca3783d4f45b032943ad")


@dataclass(frozen=True)
class PinnedFile:
    """One data file and the published file it is made from."""

    repository: str  # owner/name
    commit: str
    path: str  # inside the repository
    published_sha256: str  # of the file as published
    sha256: str  # of the data file (the published one unless converted)
    convert: Callable[[str, bytes], bytes] | None = None  # (origin, published bytes) -> data file bytes

    def url(self) -> str:
        base = os.environ.get(SOURCES_URL_ENV) or DEFAULT_SOURCES_URL
        return f"{base.rstrip('/')}/{self.repository}/{self.commit}/{self.path}"


PINNED: dict[str, PinnedFile] = {
    "summeval.jsonl": PinnedFile(
        *BARTSCORE,
        path="SUM/SummEval/data.pkl",
        published_sha256="008f1639a3352f0248cac88b74ff431c27287a027a888902ef425a26005f0acf",
        sha256="b4f52322882d9c4567a5f8ed59e965646548bdf1313f1564609e69e42227bf79",
        convert=summeval_jsonl,
    ),
    "wgc-summeval-split/train.parquet": PinnedFile(
        *WHEN_GRADIENTS_COLLIDE,
        path="expt/SummEval/SummEval-train.parquet",
        published_sha256="b9ecdd7c37844e01d5e8969680c9113fb8040892ea4f131d2b193834742c4b7c",
        sha256="b9ecdd7c37844e01d5e8969680c9113fb8040892ea4f131d2b193834742c4b7c",
    ),
    "wgc-summeval-split/test.parquet": PinnedFile(
        *WHEN_GRADIENTS_COLLIDE,
        path="expt/SummEval/SummEval-test.parquet",
        published_sha256="99cb1ef41546f0b060b73c6a40458c0aa1f1689033da0086ea258396f7a9d3a8",
        sha256="99cb1ef41546f0b060b73c6a40458c0aa1f1689033da0086ea258396f7a9d3a8",
    ),
}
