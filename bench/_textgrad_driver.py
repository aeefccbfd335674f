"""One TextGrad step (TGD) and a validation pass, run by ``bench/.venv-textgrad/bin/python`` (TextGrad's own venv).

    bench/.venv-textgrad/bin/python bench/_textgrad_driver.py INPUT.json OUTPUT.json

Driven by ``bench/textgrad_compare.py``, which sets the environment: ``OPENAI_BASE_URL`` (the scripted endpoint)
and ``OPENAI_API_KEY`` (a placeholder), read by the openai client inside TextGrad's engine;
``TEXTGRAD_LOG_DIR`` and ``XDG_CACHE_HOME`` under a temporary directory.

The engine is ``textgrad.engine_experimental.openai.OpenAIEngine(model_string, cache=False)``: TextGrad's
OpenAI engine with its reply cache switched off through its own ``cache`` argument (the non-experimental
``ChatOpenAI`` always caches in a diskcache, and ``OpenAICompatibleEngine`` replaces the client it is given with a
fresh ``OpenAI()``, so the base URL is passed the way the openai client reads it: ``OPENAI_BASE_URL``).

Per batch in the input (one TGD step each), the work follows TextGrad's prompt-optimization example
(examples/prompt_optimization.py): for each training sample the forward pass (``BlackboxLLM`` whose system prompt
is the judge instruction being optimized) and the loss (``MultiFieldEvaluation``: an LLM critique of the predicted
against the correct score); ``tg.sum`` of the losses, ``backward()``, ``TGD.step()``; then a validation pass of the
updated instruction over the validation samples with a thread pool, as the example's ``eval_dataset`` does.

With ``"threaded": true`` in the input, the samples' forward and loss calls run side by side in a thread pool of
``concurrency`` workers (TextGrad's best supported setting: the way its own evaluation code runs samples, each
sample's graph its own); otherwise one sample after the other, as the example's training loop does (the
sequential reference). ``backward()`` and ``TGD.step()`` are TextGrad's own: they call the engine one call at a
time.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import textgrad as tg  # type: ignore[import-not-found]  # TextGrad lives in its own venv, untyped
from textgrad.engine_experimental.openai import OpenAIEngine  # type: ignore[import-not-found]

EVALUATION = (
    "Compare the predicted score of the judge with the correct score for the summary. Say whether the prediction "
    "is right, how far off it is and in which direction, and what that suggests about how the judge applied the "
    "criterion. Answer in at most four sentences."
)


def main() -> None:
    spec: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    engine = OpenAIEngine(model_string=spec["model"], cache=False)
    tg.set_backward_engine(engine, override=True)
    instruction = tg.Variable(
        spec["instruction"],
        requires_grad=True,
        role_description=f"instruction to the judge that scores the {spec['criterion']} of a summary from 1 to 5",
    )
    model = tg.BlackboxLLM(engine, system_prompt=instruction)
    optimizer = tg.TGD(parameters=[instruction], engine=engine)
    loss_fn = tg.loss.MultiFieldEvaluation(
        evaluation_instruction=tg.Variable(EVALUATION, requires_grad=False, role_description="evaluation instruction"),
        role_descriptions=["predicted score", "correct score"],
        engine=engine,
    )

    def query(text: str) -> Any:
        return tg.Variable(text, requires_grad=False, role_description="the article and summary to score")

    def judge(sample: dict[str, Any]) -> str:
        return str(model(query(sample["text"])).value)

    def forward_and_loss(sample: dict[str, Any]) -> Any:
        prediction = model(query(sample["text"]))
        truth = tg.Variable(str(sample["label"]), requires_grad=False, role_description="correct score")
        return loss_fn([prediction, truth])

    steps = []
    for batch in spec["batches"]:  # one TGD step + validation pass per batch
        started = time.perf_counter()
        optimizer.zero_grad()
        if spec["threaded"]:
            with ThreadPoolExecutor(max_workers=spec["concurrency"]) as pool:
                losses = list(pool.map(forward_and_loss, batch))
        else:
            losses = [forward_and_loss(sample) for sample in batch]
        total = tg.sum(losses)
        total.backward()
        optimizer.step()
        trained = time.perf_counter()
        with ThreadPoolExecutor(max_workers=spec["concurrency"]) as pool:
            predictions = list(pool.map(judge, spec["val"]))
        finished = time.perf_counter()
        steps.append(
            {
                "train_seconds": trained - started,
                "val_seconds": finished - trained,
                "total_seconds": finished - started,
                "started_at": time.time() - (time.perf_counter() - started),
                "ended_at": time.time() - (time.perf_counter() - finished),
                "new_instruction": instruction.value,
                "val_predictions": predictions,
            }
        )
    Path(sys.argv[2]).write_text(json.dumps({"steps": steps}), encoding="utf-8")


if __name__ == "__main__":
    main()
