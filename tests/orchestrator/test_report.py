"""`judgeopt report`: a real small experiment against the scripted endpoint (2 modes × 2 gates × 2 runs, 2 steps),
reported as markdown and self-contained HTML; the numbers are recomputed here from the cells' summary.json files."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.scripts import deterministic_handler

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.engine.metrics import hypervolume_indicator
from judgeopt.orchestrator.study.reporting import write_report

MODES = ("SSS", "single")
GATES = ("mae", "none")
RUNS = 2
SECTIONS = (
    "Table 1: initial and best macro ρ per configuration",
    "Configurations that never improve over the initial prompt",
    "Trajectories: test ρ per criterion over steps",
    "Macro ρ and hypervolume over steps",
    "Diagnostics: gradient specificity and optimizer adherence",
    "Instruction interference: stitched vs generic vs separate",
    "How the judge scored: logprob weighting and halo",
    "Instruction lengths over steps",
    "Mitigations",  # the archive of non-dominated prompts is kept under every gate
    "Calls, tokens and wall time per role",
    "Provenance",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Report:
    directory: Path
    markdown: str
    html: str


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished experiment directory, made by `judgeopt experiment` against the scripted endpoint."""
    root = tmp_path_factory.mktemp("report")
    with FakeOpenAI(deterministic_handler(topical_gradients=True)) as fake:
        config = {
            "models": {
                "default": {
                    "base_url": fake.base_url,
                    "model": "fake-model",
                    "structured_output": "json_schema",
                    "max_retries": 0,
                    "timeout": 10,
                }
            },
            "run": {
                "steps": 2,
                "batch_size": 2,
                "gate": "mae",
                "bootstrap_resamples": 50,
                "concurrency": 8,
                "dataset": {"name": "summeval", "train_size": 12, "val_size": 4, "test_size": 6},
            },
            "grid": {"modes": list(MODES), "gates": list(GATES), "runs": RUNS, "select_on": "test"},
        }
        grid = root / "grid.yaml"
        grid.write_text(yaml.safe_dump(config))
        directory = root / "experiment"
        assert main(["experiment", "--grid", str(grid), "--dir", str(directory)]) == 0
    yield directory


@pytest.fixture(scope="module")
def report(experiment: Path) -> Report:
    markdown, html = write_report(experiment)
    return Report(experiment, markdown.read_text(encoding="utf-8"), html.read_text(encoding="utf-8"))


def summaries(experiment: Path, mode: str, gate: str) -> list[dict[str, Any]]:
    return [
        json.loads((experiment / "cells" / f"{mode}-{gate}-run{k}" / "summary.json").read_text()) for k in range(RUNS)
    ]


def section(markdown: str, number: int) -> str:
    """The markdown of section ``number`` (up to the next ``## `` heading)."""
    start = markdown.index(f"\n## {number}. ")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def row(text: str, *first: str) -> list[str]:
    """The cells of the first table row of ``text`` whose leading cells are ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and tuple(cells[: len(first)]) == first:
            return cells
    raise AssertionError(f"no row starting with {first} in:\n{text}")


def mean_at(runs: list[dict[str, Any]], step: int, key: str) -> float:
    return fmean(next(s[key] for s in run["steps"] if s["step"] == step) for run in runs)


def best_on_validation(runs: list[dict[str, Any]]) -> int:
    steps: list[int] = [s["step"] for s in runs[0]["steps"]]
    return max(steps, key=lambda t: (mean_at(runs, t, "val_metric"), -t))


class TestSections:
    def test_markdown_has_every_section(self, report: Report) -> None:
        """report.md carries every section heading, numbered in order."""
        for number, title in enumerate(SECTIONS, 1):
            assert f"\n## {number}. {title}\n" in report.markdown

    def test_html_has_every_section(self, report: Report) -> None:
        """report.html carries every section heading as an <h2>."""
        for number, title in enumerate(SECTIONS, 1):
            assert f">{number}. {title}</h2>" in report.html


class TestJudging:
    def test_scoring_counts_and_halo_match_the_summaries(self, report: Report) -> None:
        """Each run's weighted and sampled score counts, and its judge and human halo at every step, as in its
        summary.json."""
        text = section(report.markdown, SECTIONS.index("How the judge scored: logprob weighting and halo") + 1)
        checked = 0
        for gate in GATES:
            for k, run in enumerate(summaries(report.directory, "SSS", gate)):
                name = f"SSS-{gate}-run{k}"
                scoring = run["judge_scoring"]
                assert scoring["sampled"] > 0
                assert row(text, name)[1:4] == ["sampled", "0", str(scoring["sampled"])]
                for step in run["steps"]:
                    cells = row(text, name, str(step["step"]))
                    halo = step["halo"]
                    assert cells[2:4] == [f"{halo['judge']:.3f}", f"{halo['human']:.3f}"]
                    checked += 1
        assert checked == len(GATES) * RUNS * 3


class TestSelfContainedHtml:
    def test_no_external_references(self, report: Report) -> None:
        """The HTML loads nothing from elsewhere: no remote sources, no stylesheet links, no scripts."""
        assert 'src="http' not in report.html
        assert "<link" not in report.html
        assert "<script" not in report.html
        assert "href=" not in report.html
        sources = re.findall(r'src="([^"]*)"', report.html)
        assert sources and all(source.startswith("data:image/png;base64,") for source in sources)

    def test_embeds_valid_pngs(self, report: Report) -> None:
        """At least four figures are embedded as base64 PNG data URIs that decode to PNG files."""
        images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report.html)
        assert len(images) >= 4
        for data in images:
            assert base64.b64decode(data).startswith(PNG_SIGNATURE)


class TestFigureFiles:
    def test_markdown_links_existing_pngs(self, report: Report) -> None:
        """Every figure the markdown links is a PNG file in report_files/, linked relatively."""
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.markdown)
        assert len(links) >= 4
        for link in links:
            assert link.startswith("report_files/") and link.endswith(".png")
            assert (report.directory / link).read_bytes().startswith(PNG_SIGNATURE)

    def test_one_trajectory_figure_per_gate(self, report: Report) -> None:
        """Trajectories and macro ρ/HVI come as one figure per gate setting."""
        files = {p.name for p in (report.directory / "report_files").glob("*.png")}
        for gate in GATES:
            assert {f"trajectories-gate-{gate}.png", f"macro-hvi-gate-{gate}.png", f"lengths-gate-{gate}.png"} <= files


def hvi_of_run_means(runs: list[dict[str, Any]]) -> float:
    """The study's HVI, recomputed from the summaries: the archive of run-mean per-criterion ρ vectors over the
    steps tested in every run, and its hypervolume against −1 (the exact computation is tested in test_metrics)."""
    tested = [{s["step"]: s["rho"] for s in run["steps"] if s["rho"] is not None} for run in runs]
    steps = sorted(set.intersection(*(set(t) for t in tested)))
    criteria = sorted(tested[0][steps[0]])
    points = [[fmean(t[s][c] for t in tested) for c in criteria] for s in steps]
    return hypervolume_indicator(points)


class TestTable1:
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("gate", GATES)
    def test_initial_best_and_hvi_match_the_summaries(self, report: Report, mode: str, gate: str) -> None:
        """A configuration's row shows the mean initial ρ, the mean ρ at the validation-chosen step and the mean HVI."""
        runs = summaries(report.directory, mode, gate)
        initial = fmean(run["initial"]["macro_rho"] for run in runs)
        best = best_on_validation(runs)
        best_rho = mean_at(runs, best, "macro_rho")
        hvi = fmean(run["hvi"] for run in runs)
        cells = row(section(report.markdown, 1), mode, gate)
        assert cells[3].startswith(f"{initial:.3f} ± ")
        assert cells[4].startswith(f"{best_rho:.3f} ± ") and cells[4].endswith(f"(step {best})")
        assert cells[5] == f"{best_rho - initial:+.3f}"
        intervals = [run["delta_macro_rho"]["ci95"] for run in runs]
        assert all(intervals)
        assert cells[7] == "; ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in intervals)
        assert cells[8].startswith(f"{hvi:.3f} ± ")
        assert cells[9] == f"{hvi_of_run_means(runs):.3f}"
        assert cells[4] in report.html

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("gate", GATES)
    def test_each_configuration_has_its_delta_interval(self, report: Report, mode: str, gate: str) -> None:
        """Beside Δ, the configuration's interval (both runs, one bootstrap draw of test items) around the
        configuration's Δ, at its validation-chosen step: kept at step 0, Δ is 0 on every resample (whatever the
        runs' own best steps and intervals)."""
        cells = row(section(report.markdown, 1), mode, gate)
        low, high = (float(v) for v in cells[6].strip("[]").split(", "))
        delta = float(cells[5])
        assert low - 0.0005 <= delta <= high + 0.0005
        assert low <= high
        if cells[4].endswith("(step 0)"):
            assert cells[6] == "[+0.000, +0.000]"

    def test_study_column_only_on_mae_rows(self, report: Report) -> None:
        """The study's published Table 1 values stand beside the MAE-gate rows only."""
        table = section(report.markdown, 1)
        assert row(table, "single", "mae")[-1] == "0.274 → 0.305 (step 2)"
        assert row(table, "SSS", "mae")[-1] == "0.284 → 0.284 (step 0), HVI 2.749"
        assert row(table, "SSS", "none")[-1] == "—"


class TestNeverImprove:
    def test_counts_match_a_recount(self, report: Report) -> None:
        """The never-improve counts (best-on-test and best-on-validation) equal a count made from the summaries."""
        on_test = on_val = 0
        for mode in MODES:
            for gate in GATES:
                runs = summaries(report.directory, mode, gate)
                steps = [s["step"] for s in runs[0]["steps"]]
                start = mean_at(runs, 0, "macro_rho")
                on_test += not any(mean_at(runs, t, "macro_rho") > start for t in steps[1:])
                on_val += not mean_at(runs, best_on_validation(runs), "macro_rho") > start
        text = section(report.markdown, 2)
        assert f"best-on-test basis: {on_test} of 4 configurations never improve" in text
        assert f"best-on-validation basis: {on_val} of 4 configurations never improve" in text
        assert "6 of 10 configurations never improved" in text


class TestDiagnostics:
    @pytest.mark.parametrize("mode", MODES)
    def test_scripted_ratings(self, report: Report, mode: str) -> None:
        """Per-criterion gradients are rated 9 for specificity by the scripted evaluator, and adherence is 7."""
        cells = row(section(report.markdown, 5), mode)
        assert cells[1] == "per-criterion"
        assert cells[2].startswith("9.00")
        assert cells[3].startswith("7.00")
        assert cells[-1] == "9.0"


class TestInterference:
    ROWS = ("generic (initial prompt, joint)", "best per criterion, judged alone", "stitched")

    def rows(self, report: Report, first: str) -> dict[str, list[str]]:
        text = section(report.markdown, 6)
        found = {}
        for name in self.ROWS:
            cells = next(
                cells
                for line in text.splitlines()
                if line.startswith("|")
                and (cells := [c.strip() for c in line.strip().strip("|").split("|")])[0] == first
                and cells[1].startswith(name)
            )
            found[name] = cells
        return found

    @pytest.mark.parametrize("gate", GATES)
    def test_three_rows_per_gate(self, report: Report, gate: str) -> None:
        """Each gate setting has its own three rows (never pooled): per-criterion and macro ρ as in
        interference.json, and each row's difference from the generic prompt."""
        result = json.loads((report.directory / "interference.json").read_text())["gates"][gate]
        criteria = sorted(result["generic"]["rho"])
        rows = self.rows(report, f"gate {gate}")
        for name, key in zip(self.ROWS, ("generic", "separate", "stitched"), strict=True):
            cells = rows[name]
            assert cells[2:6] == [f"{result[key]['rho'][c]:.3f}" for c in criteria]
            assert cells[6] == f"{result[key]['macro_rho']:.3f}"
            assert cells[7] == f"{result[key]['macro_rho'] - result['generic']['macro_rho']:+.3f}"
        assert result["cells"] == [f"single-{gate}-run{k}" for k in range(RUNS)]
        assert "mean" not in {
            line.split("|")[1].strip() for line in section(report.markdown, 6).splitlines() if line.startswith("|")
        }

    def test_study_rows_beside(self, report: Report) -> None:
        """The study's three rows, per criterion and macro: 0.284 generic, 0.305 judged alone, 0.220 stitched."""
        rows = self.rows(report, "study (arXiv 2605.26046)")
        # criteria in report order: coherence, consistency, fluency, relevance
        assert rows[self.ROWS[0]][2:8] == ["0.308", "0.256", "0.366", "0.208", "0.284", "+0.000"]
        assert rows[self.ROWS[1]][2:8] == ["0.338", "0.363", "0.350", "0.168", "0.305", "+0.021"]
        assert rows[self.ROWS[2]][2:8] == ["0.215", "0.105", "0.303", "0.257", "0.220", "-0.064"]

    @pytest.mark.parametrize("gate", GATES)
    def test_picks_are_the_best_over_every_run_and_step(self, report: Report, gate: str) -> None:
        """Chosen on test (the study's choice): each criterion's pick is the highest test ρ any Single-Task run of
        the gate reached at any step, recomputed from the runs' summaries."""
        result = json.loads((report.directory / "interference.json").read_text())["gates"][gate]
        runs = summaries(report.directory, "single", gate)
        for criterion, pick in result["picks"].items():
            best = max(s["rho"][criterion] for run in runs for s in run["steps"] if s["rho"] is not None)
            assert pick["rho"] == pytest.approx(best)
            assert result["separate"]["rho"][criterion] == pytest.approx(best)
            run = runs[int(pick["cell"].rsplit("run", 1)[1])]
            assert next(s for s in run["steps"] if s["step"] == pick["step"])["rho"][criterion] == pytest.approx(best)

    def test_token_lengths_per_criterion(self, report: Report) -> None:
        """Each pick's instruction length in tokens (pick / generic) is shown per criterion and gate."""
        data = json.loads((report.directory / "interference.json").read_text())
        text = section(report.markdown, 6)
        for gate, result in data["gates"].items():
            cells = row(text, gate)
            for criterion, pick in result["picks"].items():
                generic = result["generic_instruction_tokens"][criterion]
                assert any(f"{pick['instruction_tokens']} / {generic} tokens" in c for c in cells)


class TestRunDirectory:
    def test_one_run_gives_every_section(self, experiment: Path, tmp_path: Path) -> None:
        """A single run directory is reported as an experiment with one cell, every section present."""
        run_dir = shutil.copytree(experiment / "cells" / "SSS-mae-run0", tmp_path / "run")
        markdown, html = write_report(run_dir)
        text = markdown.read_text(encoding="utf-8")
        for number, title in enumerate(SECTIONS, 1):
            assert f"\n## {number}. {title}\n" in text
        assert "No interference experiment" in text
        initial = json.loads((run_dir / "summary.json").read_text())["initial"]["macro_rho"]
        assert row(section(text, 1), "SSS", "mae")[3] == f"{initial:.3f}"  # one run: the value, no ± std
        assert html.read_text(encoding="utf-8").count("data:image/png;base64,") >= 3


class TestNotAReport:
    def test_neither_directory_is_refused(self, tmp_path: Path) -> None:
        """A directory that is neither an experiment nor a run gives a one-line ConfigError."""
        with pytest.raises(ConfigError, match="neither an experiment directory") as caught:
            write_report(tmp_path)
        assert "\n" not in str(caught.value)

    def test_cell_without_summary_is_named(self, experiment: Path, tmp_path: Path) -> None:
        """An experiment with a cell that has no summary.json is refused, naming the cell."""
        copy = shutil.copytree(experiment, tmp_path / "copy", ignore=shutil.ignore_patterns("report*"))
        (copy / "cells" / "single-none-run1" / "summary.json").unlink()
        with pytest.raises(ConfigError, match=r"cell single-none-run1 has no summary\.json") as caught:
            write_report(copy)
        assert "\n" not in str(caught.value)

    def test_cli_prints_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`judgeopt report` on a directory that is neither exits 2 with one `ConfigError:` line."""
        assert main(["report", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ConfigError: ") and "\n" not in err


class TestSpend:
    def test_per_call_speed_is_the_time_at_the_service(self, report: Report) -> None:
        """The judge's median seconds per attempt is the median of its attempts' time at the service over every
        cell, with their wait for a slot counted apart, not their whole time from issue to reply."""
        at_service: list[float] = []
        queued: list[float] = []
        for store in sorted((report.directory / "cells").glob("*/run.sqlite")):
            with sqlite3.connect(store) as db:
                for service, queue in db.execute(
                    "SELECT endpoint_seconds, queue_seconds FROM calls WHERE stage = ?", ("judge",)
                ):
                    at_service.append(service)
                    queued.append(queue)
        assert len(at_service) > 100
        spend = report.markdown[report.markdown.index("Calls, tokens and wall time per role") :]
        total, median, queue = row(spend, "judge")[-3:]
        assert (total, median, queue) == (
            f"{sum(at_service):,.1f}",
            f"{statistics.median(at_service):.3f}",
            f"{sum(queued):,.1f}",
        )
