"""Tokens as well as waves: prompt tokens per step against each mode's minimum, the share a prefix cache can serve,
and on the embedded model a step's wall time against its calls' compute.

    .venv/bin/python bench/tokens.py [--modes SSS,SSC,SCC,CCC,single] [--batch 3] [--val 8] [--test 12]
        [--embedded] [--json FILE]

On a busy GPU server, or on the embedded model, a step costs the tokens it makes the model process, not its waves of
latency. For every mode, ``judgeopt optimize`` runs one step (gate none: the candidate is accepted and evaluated)
against the scripted endpoint, which logs every request body. The run makes one call at a time, so that each request
is attributed exactly to its stored call (same role, arrival inside the call's time at the endpoint) and so to its
step and purpose (tracks and steps in flight together would blur it); step 1 (training, then validation and test
under the new prompt) is counted. Tokens are counted with the embedded model's own tokenizer (SmolLM2's, read from
its GGUF file), over each message's role and text (a chat template adds a few more per message).

**The mode's minimum** counts what each call cannot do without, the data and the instructions, never an agent's
own earlier output (scores, critiques and gradients are the run's products, about the same size in every mode),
nor any template text. With s_i the tokens of sample i's fields, I_k of criterion k's instruction and P = Σ_k I_k
(K criteria, B training samples, V + T evaluated samples):

    judge      every judged sample is read once with the instructions it is scored on: Σ_i (s_i + P) over the
               B + V + T samples (``single``: once per criterion, Σ_i Σ_k (s_i + I_k))
    loss and   each instruction once per training sample, B·P; and where the mode's policy shows the stage the
    gradient   sample: S: once per criterion, Σ_i K·s_i; C: once, Σ_i s_i
    optimizer  each instruction once, P

(``single`` trains each criterion's track on a batch of its own: there each (criterion, training sample) pair is
read with its one instruction, and the stages that see the sample read it once per pair), so the modes differ where
a stage that sees the sample is split per criterion, and ``single`` in the judge stage. Measured / minimum is the
price of the templates, of the agents' earlier outputs each call carries (large for the gradient and optimizer,
whose minimum is instructions only) and of any context beyond the minimum.

**Prefix cache share**: the requests in the order they reached the endpoint, through an unbounded prefix cache of
16-token blocks (as vLLM's automatic prefix caching keeps them): a request is served the longest run of whole
blocks it shares from its start with any earlier request of the run (step 0 included). The share is the served
tokens over all prompt tokens of step 1, for judgeopt's order (most shared first: system text, task, criteria and
instructions, output format, then the sample) and for the natural alternative, the same messages with the sample
first in the user message (the data, then the question asked about it), as many judge prompts are written.

With ``--embedded`` (a few minutes), one CCC step (batch 1, validation 2, test 2) runs on the embedded local model
(one call at a time): its wall time (end of step 0 to end of step 1) against the sum of its calls' time at the
endpoint (``endpoint_seconds``), and its prompt and completion tokens as llama.cpp reported them.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _records import BenchRecord
from _support import (
    add_json_argument,
    console,
    dataset,
    endpoint,
    exit_on_sigterm,
    machine_load,
    query,
    run_optimize,
    write_run_config,
)
from rich.table import Table

BLOCK = 16
"""Tokens per prefix-cache block."""
STAGES = ("judge", "loss", "gradient", "optimizer")
SAMPLE = re.compile(r"<sample>\n.*?\n</sample>\n?", re.DOTALL)
FIELD_TAG = re.compile(r'</?field(?: name="[^"]*")?>')


class Tokenizer:
    """The embedded model's tokenizer (vocabulary only: no weights are loaded)."""

    def __init__(self) -> None:
        import llama_cpp

        from judgeopt.core.local_model import LocalModelServer

        path = LocalModelServer().model_path
        self._model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)

    def tokens(self, text: str) -> list[int]:
        return list(self._model.tokenize(text.encode(), add_bos=False, special=False))

    def count(self, text: str) -> int:
        return len(self.tokens(text))


@dataclass(frozen=True)
class Request:
    role: str
    arrived: float
    messages: tuple[tuple[str, str], ...]
    step: int
    purpose: str

    def sample_text(self) -> str | None:
        """The sample's field texts, without the tags around them; ``None`` if the request carries no sample."""
        user = self.messages[-1][1]
        found = SAMPLE.search(user)
        if found is None:
            return None
        return FIELD_TAG.sub("", found.group(0).removeprefix("<sample>").removesuffix("\n").removesuffix("</sample>"))

    def text(self, *, sample_first: bool = False) -> str:
        """The messages as one text; ``sample_first`` moves the sample to the start of the last (user) message."""
        parts = []
        for index, (role, content) in enumerate(self.messages):
            if sample_first and index == len(self.messages) - 1 and (found := SAMPLE.search(content)):
                content = found.group(0) + SAMPLE.sub("", content, count=1)
            parts.append(f"{role}\n{content}\n")
        return "".join(parts)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def attributed(run_dir: Path, logged: Iterable[dict[str, Any]]) -> tuple[list[Request], int]:
    """Each logged request with the step and purpose of the stored call it served (same role, arrival inside the
    call's time at the endpoint, the tightest such call); and how many found none."""
    calls = query(run_dir, "SELECT stage, step, purpose, at - endpoint_seconds, at FROM calls WHERE outcome = 'ok'")
    requests, unmatched = [], 0
    for entry in logged:
        arrived = float(entry["at"])
        fits = [
            (end - start, step, purpose)
            for stage, step, purpose, start, end in calls
            if stage == entry["role"] and start - 0.005 <= arrived <= end
        ]
        if not fits:
            unmatched += 1
            continue
        _, step, purpose = min(fits)
        messages = tuple((m["role"], _message_text(m.get("content", ""))) for m in entry["body"]["messages"])
        requests.append(Request(entry["role"], arrived, messages, step, purpose))
    return requests, unmatched


def served_share(ordered: Sequence[list[int]], counted: Sequence[bool]) -> float:
    """Share of the counted requests' tokens an unbounded prefix cache of ``BLOCK``-token blocks serves, the
    requests arriving in ``ordered`` order (uncounted ones only fill the cache)."""
    cached: set[int] = set()
    served = total = 0
    for tokens, count in zip(ordered, counted, strict=True):
        chain, hit, missed = 0, 0, False
        for start in range(0, len(tokens) - len(tokens) % BLOCK, BLOCK):
            chain = hash((chain, tuple(tokens[start : start + BLOCK])))
            if not missed and chain in cached:
                hit += BLOCK
            else:
                missed = True
                cached.add(chain)
        if count:
            served += hit
            total += len(tokens)
    return served / total if total else 0.0


def instructions(run_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The instructions step 1 trained with (step 0's prompt) and evaluated (its accepted candidate), over every
    track (``single`` has one per criterion)."""
    bodies = dict(query(run_dir, "SELECT id, body FROM prompts"))
    trained: dict[str, str] = {}
    evaluated: dict[str, str] = {}
    for step, prompt_id in query(run_dir, "SELECT step, prompt_id FROM steps WHERE step IN (0, 1)"):
        (trained if step == 0 else evaluated).update(json.loads(bodies[prompt_id])["instructions"])
    return trained, evaluated


def minimum(mode: str, requests: Sequence[Request], tokenizer: Tokenizer, run_dir: Path) -> dict[str, int]:
    """The mode's minimum prompt tokens per stage for step 1 (see the module docstring). In ``single`` each
    criterion's track has a batch of its own: there a (track, sample) pair is one training judge request, reading
    one criterion's instruction; elsewhere each distinct training sample is one pair, reading all of them."""
    trained, evaluated = instructions(run_dir)
    single = mode == "single"
    letters = {"loss": "S", "gradient": "S", "optimizer": "S"} if single else dict(zip(STAGES[1:], mode, strict=True))
    k_count = len(trained)
    p_train = sum(tokenizer.count(v) for v in trained.values())
    p_eval = sum(tokenizer.count(v) for v in evaluated.values())
    judged = [r for r in requests if r.role == "judge" and r.step == 1 and r.sample_text() is not None]
    pairs = [r.sample_text() or "" for r in judged if r.purpose == "train"]
    train = [tokenizer.count(text) for text in (pairs if single else dict.fromkeys(pairs))]
    rest = {(r.sample_text(), r.purpose) for r in judged if r.purpose != "train"}
    per_pair = p_train / k_count if single else p_train  # the instructions one pair reads
    copies = k_count if single else 1  # reads of each evaluated sample: one per track
    judge = sum(s + per_pair for s in train)
    judge += sum(copies * tokenizer.count(text or "") + p_eval for text, _ in rest)
    found = {"judge": round(judge), "optimizer": p_train}
    for stage in ("loss", "gradient"):  # the sample counts only where the mode's policy shows it to the stage
        shown = any(r.sample_text() is not None for r in requests if r.role == stage and r.step == 1)
        reads = 0 if not shown else 1 if single or letters[stage] == "C" else k_count
        found[stage] = round(sum(reads * s + per_pair for s in train))
    return found


def measure_mode(mode: str, base_url: str, tmp: Path, args: argparse.Namespace) -> Path:
    config = write_run_config(
        tmp / f"{mode}.yaml",
        base_url,
        mode=mode,
        steps=1,
        batch_size=args.batch,
        gate="none",
        concurrency=1,  # one call at a time: each logged request is attributed to its own stored call
        bootstrap_resamples=0,
        dataset=dataset(24, args.val, args.test),
    )
    run_optimize(config, tmp / mode)
    return tmp / mode


def embedded_step(tmp: Path, record: BenchRecord) -> None:
    """One CCC step on the embedded model: wall time against the sum of its calls' time at the endpoint."""
    config = tmp / "embedded.yaml"
    config.write_text(
        "run:\n  mode: CCC\n  steps: 1\n  batch_size: 1\n  gate: none\n  bootstrap_resamples: 0\n"
        "  dataset: {name: summeval, train_size: 4, val_size: 2, test_size: 2}\n",
        encoding="utf-8",
    )
    console.print("running one CCC step on the embedded model …", style="dim")
    run_optimize(config, tmp / "embedded")
    run_dir = tmp / "embedded"
    finished = dict(query(run_dir, "SELECT step, finished_at FROM steps"))
    compute, prompt, completion, calls = query(
        run_dir,
        "SELECT SUM(endpoint_seconds), SUM(prompt_tokens), SUM(completion_tokens), COUNT(*) FROM calls "
        "WHERE step = 1 AND outcome = 'ok'",
    )[0]
    wall = finished[1] - finished[0]
    table = Table(title="One CCC step on the embedded model (batch 1, validation 2, test 2; one call at a time)")
    for column in ("calls", "wall s", "Σ endpoint_seconds", "wall / Σ compute", "prompt tokens", "completion tokens"):
        table.add_column(column, justify="right")
    table.add_row(str(calls), f"{wall:.1f}", f"{compute:.1f}", f"{wall / compute:.2f}", str(prompt), str(completion))
    console.print(table)
    record.add("embedded CCC step: wall / Σ endpoint compute", wall / compute, "ratio")
    record.add("embedded CCC step: prompt tokens", prompt, "tokens")
    record.add("embedded CCC step: completion tokens", completion, "tokens")


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="SSS,SSC,SCC,CCC,single")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--embedded", action="store_true", help="also time one step on the embedded model")
    add_json_argument(parser)
    args = parser.parse_args()
    console.print(machine_load(), style="dim")
    record = BenchRecord("tokens")
    tokenizer = Tokenizer()
    table = Table(
        title=f"Step 1 prompt tokens (SmolLM2 tokenizer) against the mode's minimum; batch {args.batch}, "
        f"validation {args.val}, test {args.test}"
    )
    for column in ("mode", *STAGES, "all / minimum", "cache share, judgeopt order", "cache share, sample first"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tmp_name:
        tmp = Path(tmp_name)
        for mode in args.modes.split(","):
            with endpoint(log_bodies=True) as ep:
                console.print(f"running {mode} …", style="dim")
                run_dir = measure_mode(mode, ep.base_url, tmp, args)
                requests, unmatched = attributed(run_dir, ep.requests())
            if unmatched:
                raise SystemExit(f"{mode}: {unmatched} logged requests matched no stored call")
            step = [r for r in requests if r.step == 1]
            if not step:
                raise SystemExit(f"{mode}: no request attributed to step 1")
            measured = {s: sum(tokenizer.count(r.text()) for r in step if r.role == s) for s in STAGES}
            floor = minimum(mode, requests, tokenizer, run_dir)
            ordered = sorted(requests, key=lambda r: r.arrived)
            counted = [r.step == 1 for r in ordered]
            ours = served_share([tokenizer.tokens(r.text()) for r in ordered], counted)
            natural = served_share([tokenizer.tokens(r.text(sample_first=True)) for r in ordered], counted)
            ratio = sum(measured.values()) / sum(floor.values())
            table.add_row(
                mode,
                *(f"{measured[s]:,} / {floor[s]:,}" for s in STAGES),
                f"{ratio:.2f}",
                f"{ours:.0%}",
                f"{natural:.0%}",
            )
            for stage in STAGES:
                record.add(f"{mode}: step {stage} prompt tokens", measured[stage], "tokens")
                record.add(f"{mode}: step {stage} minimum prompt tokens", floor[stage], "tokens")
            record.add(f"{mode}: step prompt tokens / minimum", ratio, "ratio")
            record.add(f"{mode}: prefix-cache share, judgeopt order", ours, "ratio")
            record.add(f"{mode}: prefix-cache share, sample first", natural, "ratio")
        console.print(table)
        console.print(
            "measured / minimum per stage; the minimum counts the data and instructions each call needs, not the "
            "agents' own earlier outputs nor template text. Completion tokens are not counted here: the scripted "
            "endpoint's replies are not a model's (see --embedded)."
        )
        if args.embedded:
            embedded_step(tmp, record)
    record.write(args.json)


if __name__ == "__main__":
    main()
