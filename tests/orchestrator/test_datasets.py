"""Datasets: finding and downloading data files, loading and validating them, and seeded splits."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import pickle
import shutil
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.upstream import CountingServer, bartscore_docs, lay_out_upstream, serving
from pydantic import ValidationError
from structlog.testing import capture_logs

from judgeopt.orchestrator.data import locating, sources
from judgeopt.orchestrator.data.bartscore import load_plain_pickle
from judgeopt.orchestrator.data.loading import WGC_FILES, load_dataset
from judgeopt.orchestrator.data.locating import locate_data_file
from judgeopt.orchestrator.data.records import SUMMEVAL_CRITERIA, CriterionSpec, Dataset, DatasetConfig, Record, Splits
from judgeopt.orchestrator.data.splits import split_dataset
from judgeopt.orchestrator.errors import DataError

SUMMEVAL_SHA256 = "b4f52322882d9c4567a5f8ed59e965646548bdf1313f1564609e69e42227bf79"  # from SOURCES.md
SUMMEVAL_MEANS = {"coherence": 3.413, "consistency": 4.660, "fluency": 4.673, "relevance": 3.777}  # from SOURCES.md
QUALITY = CriterionSpec(name="quality")  # 1-5, integer


@pytest.fixture(scope="module")
def summeval() -> Dataset:
    return load_dataset(DatasetConfig())


@pytest.fixture(scope="module")
def wgc() -> Dataset:
    return load_dataset(DatasetConfig(name="summeval-wgc"))


@pytest.fixture
def no_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every data dir empty or missing; returns the user cache dir (``$XDG_CACHE_HOME/judgeopt``)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("JUDGEOPT_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JUDGEOPT_DATA_URL", raising=False)
    monkeypatch.setenv("JUDGEOPT_SOURCES_URL", "http://127.0.0.1:9/")  # never the public origins from a test
    monkeypatch.setattr(locating, "checkout_data_dir", lambda: tmp_path / "no-checkout")
    return tmp_path / "cache" / "judgeopt"


@pytest.fixture(scope="module")
def shared_files() -> dict[str, Path]:
    """The real data files, located before any test hides the data dirs (module fixtures come first)."""
    return {name: locate_data_file(name) for name in ("summeval.jsonl", *WGC_FILES)}


@pytest.fixture
def served(tmp_path: Path, shared_files: dict[str, Path]) -> Path:
    """A folder holding copies of the shared data files, laid out as in the data dir."""
    root = tmp_path / "served"
    for name, path in shared_files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / name)
    return root


def _ids(records: Sequence[Record]) -> set[str]:
    return {record.id for record in records}


def _groups(records: Sequence[Record]) -> set[str]:
    return {record.group for record in records}


def _assert_group_disjoint(splits: Splits) -> None:
    assert not _groups(splits.train) & _groups(splits.val)
    assert not _groups(splits.train) & _groups(splits.test)
    assert not _groups(splits.val) & _groups(splits.test)


def _write(path: Path, content: str | bytes | list[dict[str, object]]) -> Path:
    """Text or bytes as they are; a list of rows as Parquet."""
    if isinstance(content, list):
        pq.write_table(pa.Table.from_pylist(content), path)
    else:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _jsonl(*rows: object) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


class TestCriterionSpec:
    def test_defaults_are_an_integer_one_to_five_scale(self) -> None:
        """A bare criterion is scored 1-5 in whole points with no tolerance."""
        spec = CriterionSpec(name="quality")
        assert (spec.min_score, spec.max_score, spec.integer_scores, spec.tolerance) == (1.0, 5.0, True, 0.0)

    @pytest.mark.parametrize("bounds", [(5.0, 1.0), (3.0, 3.0)])
    def test_max_must_exceed_min(self, bounds: tuple[float, float]) -> None:
        """A scale whose maximum is not above its minimum is rejected."""
        with pytest.raises(ValidationError, match="greater than min_score"):
            CriterionSpec(name="quality", min_score=bounds[0], max_score=bounds[1])

    @pytest.mark.parametrize("name", ["", "two words", "a.b", "naïve"])
    def test_name_must_be_a_simple_word(self, name: str) -> None:
        """Names are non-empty words of letters, digits, '_' and '-'."""
        with pytest.raises(ValidationError):
            CriterionSpec(name=name)

    def test_unknown_fields_are_rejected(self) -> None:
        """A misspelt setting is an error, not ignored."""
        with pytest.raises(ValidationError):
            CriterionSpec.model_validate({"name": "quality", "max": 3})

    def test_summeval_criteria_are_averaged_one_to_five_scales(self) -> None:
        """The four SummEval criteria are 1-5, non-integer (expert means), tolerance 0.5, with descriptions."""
        assert [c.name for c in SUMMEVAL_CRITERIA] == ["coherence", "consistency", "fluency", "relevance"]
        for spec in SUMMEVAL_CRITERIA:
            assert (spec.min_score, spec.max_score, spec.integer_scores, spec.tolerance) == (1.0, 5.0, False, 0.5)
            assert spec.description


class TestLocateDataFile:
    def test_finds_the_shared_data_beside_the_checkout(self) -> None:
        """With no arguments, the shared data folder beside the checkout is found."""
        assert locate_data_file("summeval.jsonl").is_file()
        assert locate_data_file("wgc-summeval-split/train.parquet").name == "train.parquet"

    def test_data_dir_argument_comes_first(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The data_dir argument wins over $JUDGEOPT_DATA_DIR, which wins over the shared folder."""
        explicit, from_env = tmp_path / "explicit", tmp_path / "env"
        for folder in (explicit, from_env):
            folder.mkdir()
            (folder / "summeval.jsonl").write_text("x")
        monkeypatch.setenv("JUDGEOPT_DATA_DIR", str(from_env))
        assert locate_data_file("summeval.jsonl", explicit) == explicit / "summeval.jsonl"
        assert locate_data_file("summeval.jsonl") == from_env / "summeval.jsonl"

    def test_user_cache_is_the_last_place(self, no_data_dirs: Path) -> None:
        """A file already in the user cache is found there without any URL."""
        (no_data_dirs / "sub").mkdir(parents=True)
        (no_data_dirs / "sub" / "data.csv").write_text("x")
        assert locate_data_file("sub/data.csv") == no_data_dirs / "sub" / "data.csv"

    @pytest.mark.parametrize("name", ["", "../secrets.txt", "/etc/passwd"])
    def test_names_must_stay_inside_the_data_dir(self, name: str) -> None:
        """Empty, parent-relative and absolute names are rejected."""
        with pytest.raises(DataError, match="relative path"):
            locate_data_file(name)

    def test_without_a_url_the_error_names_every_place(self, no_data_dirs: Path, tmp_path: Path) -> None:
        """Not found and no URL set: one line naming all four places and how to set a URL."""
        with pytest.raises(DataError) as caught:
            locate_data_file("own.jsonl")
        message = str(caught.value)
        assert "\n" not in message
        for place in (tmp_path / "empty", tmp_path / "no-checkout", no_data_dirs):
            assert str(place) in message
        assert "JUDGEOPT_DATA_URL" in message


class TestDownload:
    def test_downloads_once_into_the_user_cache(self, no_data_dirs: Path, served: Path) -> None:
        """A missing file is fetched into the cache and logged; the next call finds it without a request."""
        with serving(served) as server, capture_logs() as logs:
            first = locate_data_file("summeval.jsonl", download_url=server.url)
            second = locate_data_file("summeval.jsonl", download_url=server.url)
        assert first == second == no_data_dirs / "summeval.jsonl"
        assert first.read_bytes() == (served / "summeval.jsonl").read_bytes()
        assert server.requests == ["/summeval.jsonl"]
        assert {"event": "data.downloaded", "url": f"{server.url}summeval.jsonl", "path": str(first)} in [
            {key: entry[key] for key in ("event", "url", "path") if key in entry} for entry in logs
        ]
        assert [path.name for path in no_data_dirs.iterdir()] == ["summeval.jsonl"]  # no partial file left

    def test_base_url_from_the_environment_takes_subpaths(
        self, no_data_dirs: Path, served: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """$JUDGEOPT_DATA_URL ending in '/' is a base; a subpath name lands in the same subfolder of the cache."""
        with serving(served) as server:
            monkeypatch.setenv("JUDGEOPT_DATA_URL", server.url)
            path = locate_data_file("wgc-summeval-split/test.parquet")
        assert path == no_data_dirs / "wgc-summeval-split" / "test.parquet"
        assert server.requests == ["/wgc-summeval-split/test.parquet"]

    def test_a_full_url_is_used_as_it_is(self, no_data_dirs: Path, served: Path) -> None:
        """A URL not ending in '/' is the file's own address."""
        with serving(served) as server:
            path = locate_data_file("copy.jsonl", download_url=f"{server.url}summeval.jsonl")
        assert path == no_data_dirs / "copy.jsonl"
        assert server.requests == ["/summeval.jsonl"]

    def test_unreachable_server_is_one_error_line(self, no_data_dirs: Path, served: Path, tmp_path: Path) -> None:
        """With the server stopped: one DataError line naming every place tried and the URL that failed."""
        with serving(served) as server:
            url = server.url
        with pytest.raises(DataError) as caught:
            locate_data_file("summeval.jsonl", download_url=url)
        message = str(caught.value)
        assert "\n" not in message
        for place in (tmp_path / "empty", tmp_path / "no-checkout", no_data_dirs):
            assert str(place) in message
        assert f"download from {url}summeval.jsonl failed" in message
        assert not any(no_data_dirs.iterdir())

    def test_http_error_is_reported_and_leaves_nothing(self, no_data_dirs: Path, served: Path) -> None:
        """A 404 names the status and URL, and no partial file stays in the cache."""
        with serving(served) as server, pytest.raises(DataError, match=r"missing\.jsonl failed: HTTP 404"):
            locate_data_file("missing.jsonl", download_url=server.url)
        assert not any(no_data_dirs.iterdir())


class TestPinnedOrigins:
    """Built-in data files come from their public origins (served here over loopback), checked by sha256."""

    @pytest.fixture
    def upstream(
        self, tmp_path: Path, shared_files: dict[str, Path], no_data_dirs: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[tuple[CountingServer, dict[str, str]]]:
        """The origins served on loopback; the pickle rebuilt here is not byte for byte the published one, so its
        pinned sha256 is set to the rebuilt file's (the converted file's stays the real one)."""
        published = lay_out_upstream(tmp_path / "upstream", shared_files)
        _pin_served_pickle(monkeypatch, published["summeval.jsonl"])
        with serving(tmp_path / "upstream") as server:
            monkeypatch.setenv("JUDGEOPT_SOURCES_URL", server.url)
            yield server, published

    def test_every_dataset_downloads_once_and_converts_to_the_pinned_file(
        self, upstream: tuple[CountingServer, dict[str, str]], no_data_dirs: Path
    ) -> None:
        """Both SummEval datasets load from the origins alone; summeval.jsonl is the file with the pinned sha256;
        a second load reads the cache without a request."""
        server, _ = upstream
        for _ in range(2):
            assert len(load_dataset(DatasetConfig()).records) == 1600
            assert len(load_dataset(DatasetConfig(name="summeval-wgc")).records) == 640
        assert sorted(server.requests) == sorted(
            f"/{pinned.repository}/{pinned.commit}/{pinned.path}" for pinned in sources.PINNED.values()
        )
        assert hashlib.sha256((no_data_dirs / "summeval.jsonl").read_bytes()).hexdigest() == SUMMEVAL_SHA256
        cached = sorted(str(path.relative_to(no_data_dirs)) for path in no_data_dirs.rglob("*") if path.is_file())
        assert cached == ["summeval.jsonl", *sorted(WGC_FILES)]  # the pickle itself is not kept

    @pytest.mark.parametrize("name", ["summeval.jsonl", "wgc-summeval-split/test.parquet"])
    def test_a_changed_published_file_is_refused_and_nothing_is_kept(
        self, upstream: tuple[CountingServer, dict[str, str]], no_data_dirs: Path, tmp_path: Path, name: str
    ) -> None:
        """One byte more in the published file: one line naming the sha256 found and the pinned one."""
        pinned = sources.PINNED[name]
        served = tmp_path / "upstream" / pinned.repository / pinned.commit / pinned.path
        served.write_bytes(served.read_bytes() + b"\0")
        with pytest.raises(DataError) as caught:
            locate_data_file(name)
        message = str(caught.value)
        assert "\n" not in message
        assert f"not the pinned {pinned.published_sha256}" in message
        assert "nothing was kept" in message
        assert not [path for path in no_data_dirs.rglob("*") if path.is_file()]

    def test_a_conversion_that_differs_from_the_pinned_file_is_refused(
        self,
        upstream: tuple[CountingServer, dict[str, str]],
        shared_files: dict[str, Path],
        no_data_dirs: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A pickle that matches its pinned sha256 but converts to another file (one score changed) is refused."""
        docs = bartscore_docs(shared_files["summeval.jsonl"])
        first = next(iter(docs.values()))
        next(iter(first["sys_summs"].values()))["scores"]["fluency"] = 5.0
        published = lay_out_upstream(tmp_path / "upstream", shared_files, pickle.dumps(docs, protocol=4))
        _pin_served_pickle(monkeypatch, published["summeval.jsonl"])
        expected = f"converted file's sha256 is [0-9a-f]{{64}}, not the pinned {SUMMEVAL_SHA256}"
        with pytest.raises(DataError, match=expected):
            locate_data_file("summeval.jsonl")
        assert not [path for path in no_data_dirs.rglob("*") if path.is_file()]

    def test_a_pickle_naming_a_global_is_refused_unrun(
        self,
        upstream: tuple[CountingServer, dict[str, str]],
        shared_files: dict[str, Path],
        no_data_dirs: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A pickle whose hash is pinned but that would call a function (Path.touch) is refused before it runs."""
        marker = tmp_path / "ran"
        payload = pickle.dumps({"doc": _Touches(marker)}, protocol=4)
        published = lay_out_upstream(tmp_path / "upstream", shared_files, payload)
        _pin_served_pickle(monkeypatch, published["summeval.jsonl"])
        with pytest.raises(DataError) as caught:
            locate_data_file("summeval.jsonl")
        message = str(caught.value)
        assert "\n" not in message
        assert "refused to unpickle: it names the global pathlib" in message
        assert not marker.exists()
        assert not [path for path in no_data_dirs.rglob("*") if path.is_file()]

    @pytest.mark.parametrize(
        "value", [datetime.date(2026, 1, 1), collections.OrderedDict(a=1), {1.5}, complex(1, 2)], ids=type
    )
    def test_the_unpickler_names_no_global_at_all(self, value: object) -> None:
        """Even harmless classes are refused; plain dicts, lists, strings and numbers are read."""
        with pytest.raises(DataError, match="names the global"):
            load_plain_pickle("x.pkl", pickle.dumps({"k": value}, protocol=2))
        plain = {"k": [1, 2.5, "s", None, True], "d": {"x": (1, 2)}}
        assert load_plain_pickle("x.pkl", pickle.dumps(plain)) == plain


def _pin_served_pickle(monkeypatch: pytest.MonkeyPatch, sha256: str) -> None:
    """Pin the sha256 of the pickle served here (rebuilt, not the published one); the converted file's stays real."""
    pinned = dataclasses.replace(sources.PINNED["summeval.jsonl"], published_sha256=sha256)
    monkeypatch.setitem(sources.PINNED, "summeval.jsonl", pinned)


class _Touches:
    """Pickles as a call to ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


class TestSummeval:
    def test_has_1600_summaries_of_100_articles(self, summeval: Dataset) -> None:
        """1,600 records, 16 per article, ids '<doc_id>/<system_id>', grouped by article."""
        assert len(summeval.records) == 1600
        assert len(_ids(summeval.records)) == 1600
        per_group = {group: 0 for group in _groups(summeval.records)}
        for record in summeval.records:
            per_group[record.group] += 1
            assert record.id.startswith(f"{record.group}/M")
        assert len(per_group) == 100
        assert set(per_group.values()) == {16}

    def test_fields_are_article_then_summary(self, summeval: Dataset) -> None:
        """Each record holds the article, then the summary; the dataset says so too."""
        assert summeval.text_fields == ("article", "summary")
        assert all([name for name, _ in record.fields] == ["article", "summary"] for record in summeval.records)

    def test_label_means_match_sources(self, summeval: Dataset) -> None:
        """The mean of each criterion matches SOURCES.md to three decimals."""
        assert summeval.criteria == SUMMEVAL_CRITERIA
        means = {name: round(statistics.mean(r.labels[name] for r in summeval.records), 3) for name in SUMMEVAL_MEANS}
        assert means == SUMMEVAL_MEANS

    def test_checksum_is_the_file_sha256(self, summeval: Dataset) -> None:
        """The checksum is the sha256 of summeval.jsonl given in SOURCES.md."""
        assert summeval.checksum == SUMMEVAL_SHA256
        assert summeval.source == str(locate_data_file("summeval.jsonl"))


class TestSummevalSplits:
    def test_default_sizes(self, summeval: Dataset) -> None:
        """The defaults give 160 train, 100 val and 480 test records."""
        splits = split_dataset(summeval, DatasetConfig())
        assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 100, 480)

    @pytest.mark.parametrize("seed", [0, 1, 7])
    def test_splits_are_article_disjoint(self, summeval: Dataset, seed: int) -> None:
        """No article appears in two splits, whatever the seed."""
        _assert_group_disjoint(split_dataset(summeval, DatasetConfig(seed=seed)))

    def test_same_seed_same_splits_other_seed_other_splits(self, summeval: Dataset) -> None:
        """Splits are a function of the seed."""
        assert split_dataset(summeval, DatasetConfig(seed=3)) == split_dataset(summeval, DatasetConfig(seed=3))
        assert split_dataset(summeval, DatasetConfig(seed=3)) != split_dataset(summeval, DatasetConfig(seed=4))

    def test_sizes_are_exact_by_trimming_one_group_per_split(self, summeval: Dataset) -> None:
        """Sizes that are no multiple of 16 are met exactly: at most one article per split is only partly used."""
        splits = split_dataset(summeval, DatasetConfig(train_size=50, val_size=30, test_size=70))
        assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 30, 70)
        _assert_group_disjoint(splits)
        for part in (splits.train, splits.val, splits.test):
            sizes = [sum(r.group == group for r in part) for group in _groups(part)]
            assert len([size for size in sizes if size < 16]) <= 1

    def test_test_split_does_not_depend_on_train_size(self, summeval: Dataset) -> None:
        """Test is filled first, so changing the train size keeps the test set."""
        small = split_dataset(summeval, DatasetConfig(train_size=32))
        large = split_dataset(summeval, DatasetConfig(train_size=320))
        assert small.test == large.test

    def test_sizes_beyond_the_data_are_an_error(self, summeval: Dataset) -> None:
        """Asking for more records than exist names the requested sizes and the total."""
        with pytest.raises(DataError, match=r"test 1500 \+ val 100 \+ train 160 .* 1600 in 100 groups"):
            split_dataset(summeval, DatasetConfig(test_size=1500))

    def test_overlap_quirk_draws_val_from_train(self, summeval: Dataset) -> None:
        """With val_overlaps_train, val is a seeded subset of train, and test stays disjoint from both."""
        config = DatasetConfig(val_overlaps_train=True)
        splits = split_dataset(summeval, config)
        assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 100, 480)
        assert _ids(splits.val) <= _ids(splits.train)
        assert not _groups(splits.train) & _groups(splits.test)
        assert splits == split_dataset(summeval, config)

    def test_overlap_quirk_needs_val_within_train(self, summeval: Dataset) -> None:
        """A val drawn from train cannot be larger than train."""
        with pytest.raises(DataError, match="val_size 200 is larger than train_size 160"):
            split_dataset(summeval, DatasetConfig(val_size=200, val_overlaps_train=True))


class TestSummevalWgc:
    def test_has_the_studys_160_and_480_rows(self, wgc: Dataset) -> None:
        """Ids are train-<i> and test-<i> by 0-based position; the fields are article then summary."""
        assert [r.id for r in wgc.records] == [f"train-{i}" for i in range(160)] + [f"test-{i}" for i in range(480)]
        assert wgc.text_fields == ("article", "summary")
        assert all(r.group == r.id for r in wgc.records)

    def test_labels_are_integer_one_to_five(self, wgc: Dataset) -> None:
        """The criteria are integer scales with no tolerance, and every label is a whole number 1-5."""
        assert [(c.name, c.integer_scores, c.tolerance) for c in wgc.criteria] == [
            (c.name, True, 0.0) for c in SUMMEVAL_CRITERIA
        ]
        assert {value for r in wgc.records for value in r.labels.values()} <= {1.0, 2.0, 3.0, 4.0, 5.0}

    def test_checksum_covers_both_files(self, wgc: Dataset) -> None:
        """The checksum is the sha256 of train.parquet's bytes followed by test.parquet's."""
        digest = hashlib.sha256()
        for name in WGC_FILES:
            digest.update(locate_data_file(name).read_bytes())
        assert wgc.checksum == digest.hexdigest()

    def test_val_is_carved_out_of_train(self, wgc: Dataset) -> None:
        """By default 100 train rows become val and leave train (60 remain); test is the whole test file."""
        splits = split_dataset(wgc, DatasetConfig(name="summeval-wgc"))
        assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 100, 480)
        assert not _ids(splits.train) & _ids(splits.val)
        assert _ids(splits.train) | _ids(splits.val) == {f"train-{i}" for i in range(160)}
        assert _ids(splits.test) == {f"test-{i}" for i in range(480)}

    def test_overlap_quirk_keeps_all_train_rows(self, wgc: Dataset) -> None:
        """With val_overlaps_train, train keeps all 160 rows and val is 100 of them, as in the study."""
        splits = split_dataset(wgc, DatasetConfig(name="summeval-wgc", val_overlaps_train=True))
        assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 100, 480)
        assert _ids(splits.val) <= _ids(splits.train)

    def test_val_depends_on_the_seed(self, wgc: Dataset) -> None:
        """The val rows are chosen with the seed."""
        val = [split_dataset(wgc, DatasetConfig(name="summeval-wgc", seed=seed)).val for seed in (0, 0, 1)]
        assert val[0] == val[1] != val[2]

    @pytest.mark.parametrize(
        ("setting", "message"),
        [({"train_size": 161}, "train_size 161"), ({"test_size": 481}, "test_size 481"), ({"val_size": 170}, "val_")],
    )
    def test_sizes_beyond_the_files_are_an_error(self, wgc: Dataset, setting: dict[str, int], message: str) -> None:
        """Sizes larger than the study's files are rejected."""
        with pytest.raises(DataError, match=message):
            split_dataset(wgc, DatasetConfig.model_validate({"name": "summeval-wgc", **setting}))

    def test_test_size_takes_a_seeded_sample_of_the_test_file(self, wgc: Dataset) -> None:
        """test_size 10 uses 10 rows of the test file (never ignored), chosen with the seed; val and train stay as
        with the whole test file."""
        whole = split_dataset(wgc, DatasetConfig(name="summeval-wgc"))
        tests = [split_dataset(wgc, DatasetConfig(name="summeval-wgc", test_size=10, seed=s)) for s in (0, 0, 1)]
        assert [len(t.test) for t in tests] == [10, 10, 10]
        assert _ids(tests[0].test) < _ids(whole.test)
        assert tests[0].test == tests[1].test != tests[2].test
        assert (tests[0].val, tests[0].train) == (whole.val, whole.train)

    def test_train_size_caps_the_training_rows(self, wgc: Dataset) -> None:
        """A train_size below the 60 rows left after validation takes a seeded sample of them; val is unchanged."""
        whole = split_dataset(wgc, DatasetConfig(name="summeval-wgc"))
        smaller = split_dataset(wgc, DatasetConfig(name="summeval-wgc", train_size=20))
        assert len(smaller.train) == 20 and _ids(smaller.train) < _ids(whole.train)
        assert smaller.val == whole.val

    def test_overlap_quirk_draws_val_from_the_sampled_train_rows(self, wgc: Dataset) -> None:
        """With val_overlaps_train and train_size 40, validation is drawn from those 40 rows."""
        config = DatasetConfig(name="summeval-wgc", val_overlaps_train=True, train_size=40, val_size=10)
        splits = split_dataset(wgc, config)
        assert (len(splits.train), len(splits.val)) == (40, 10)
        assert _ids(splits.val) <= _ids(splits.train)

    def test_overlap_quirk_with_val_above_train_is_an_error(self, wgc: Dataset) -> None:
        config = DatasetConfig(name="summeval-wgc", val_overlaps_train=True, train_size=40, val_size=50)
        with pytest.raises(DataError, match="val_size 50 is larger than train_size 40"):
            split_dataset(wgc, config)


class TestCriteriaSelection:
    def test_subset_is_ordered_and_overrides_only_given_fields(self) -> None:
        """config.criteria picks criteria by name, in its order; set fields replace the default's, others stay."""
        config = DatasetConfig(
            criteria=(CriterionSpec(name="fluency", description="Reads well."), CriterionSpec(name="coherence"))
        )
        dataset = load_dataset(config)
        assert [c.name for c in dataset.criteria] == ["fluency", "coherence"]
        fluency = dataset.criteria[0]
        assert (fluency.description, fluency.tolerance, fluency.integer_scores) == ("Reads well.", 0.5, False)
        assert dataset.criteria[1] == SUMMEVAL_CRITERIA[0]
        assert set(dataset.records[0].labels) == {"fluency", "coherence"}

    def test_unknown_criterion_lists_the_valid_names(self) -> None:
        """An unknown name is a DataError listing the dataset's criteria."""
        with pytest.raises(DataError, match="unknown criterion 'clarity'; valid: coherence, consistency, fluency"):
            load_dataset(DatasetConfig(name="summeval-wgc", criteria=(CriterionSpec(name="clarity"),)))

    def test_overrides_are_checked_against_the_data(self) -> None:
        """Declaring SummEval's averaged labels integer makes the first fractional label an error."""
        with pytest.raises(
            DataError, match=r"summeval\.jsonl: line 1, summary M11: column 'coherence'.*not a whole number"
        ):
            load_dataset(DatasetConfig(criteria=(CriterionSpec(name="coherence", integer_scores=True),)))

    def test_file_settings_do_not_apply_to_summeval(self) -> None:
        """Settings only a 'file' dataset uses are rejected for summeval rather than ignored."""
        with pytest.raises(DataError, match="text_fields, id_field only apply to dataset 'file'"):
            load_dataset(DatasetConfig(text_fields=("text",), id_field="id"))


FILE_ROWS: list[dict[str, object]] = [
    {"id": f"r{i}", "doc": f"d{i // 3}", "source": f"source {i // 3}", "text": f"text {i}", "quality": 1 + i % 5}
    for i in range(12)
]


def _write_rows(path: Path) -> Path:
    """FILE_ROWS in the format the suffix names."""
    match path.suffix:
        case ".csv":
            header = list(FILE_ROWS[0])
            lines = [",".join(header)] + [",".join(str(row[key]) for key in header) for row in FILE_ROWS]
            return _write(path, "\n".join(lines) + "\n")
        case ".jsonl":
            return _write(path, _jsonl(*FILE_ROWS))
        case ".json":
            return _write(path, json.dumps(FILE_ROWS))
        case _:
            return _write(path, FILE_ROWS)


class TestFileDataset:
    @pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
    def test_every_format_loads_the_same_records(self, tmp_path: Path, suffix: str) -> None:
        """CSV, JSONL, JSON and Parquet holding the same rows give the same records, checksummed by file bytes."""
        path = _write_rows(tmp_path / f"rated{suffix}")
        config = DatasetConfig(
            name="file",
            path=path,
            text_fields=("source", "text"),
            criteria=(QUALITY,),
            id_field="id",
            group_field="doc",
        )
        dataset = load_dataset(config)
        assert dataset.name == f"rated{suffix}"
        assert dataset.text_fields == ("source", "text")
        assert dataset.records[4] == Record("r4", (("source", "source 1"), ("text", "text 4")), {"quality": 5.0}, "d1")
        assert dataset.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
        assert dataset.source == str(path)

    def test_default_ids_are_row_numbers_and_groups_are_ids(self, tmp_path: Path) -> None:
        """Without id_field and group_field, ids are 'row-<n>' (1-based, as in error messages) and each is its group."""
        path = _write(tmp_path / "plain.csv", "text,quality\nfirst,1\nsecond,2\n")
        dataset = load_dataset(DatasetConfig(name="file", path=path, text_fields=("text",), criteria=(QUALITY,)))
        assert [(r.id, r.group) for r in dataset.records] == [("row-1", "row-1"), ("row-2", "row-2")]

    def test_a_byte_order_mark_is_ignored(self, tmp_path: Path) -> None:
        """A UTF-8 BOM, as spreadsheets write it, does not become part of the first column name."""
        path = _write(tmp_path / "excel.csv", "\ufefftext,quality\nfine,3\n".encode())
        dataset = load_dataset(DatasetConfig(name="file", path=path, text_fields=("text",), criteria=(QUALITY,)))
        assert dataset.records[0].fields == (("text", "fine"),)

    def test_criteria_on_different_scales_load_and_split(self, tmp_path: Path) -> None:
        """A 0-1 continuous, a 1-3 integer and a 1-5 integer criterion load, and split group-disjointly."""
        criteria = (
            CriterionSpec(name="faithful", min_score=0, max_score=1, integer_scores=False, tolerance=0.1),
            CriterionSpec(name="tone", min_score=1, max_score=3),
            CriterionSpec(name="overall"),
        )
        rows = [
            {"doc": f"d{i // 4}", "prompt": f"prompt {i // 4}", "answer": f"answer {i}"}
            | {"faithful": round(i / 39, 3), "tone": 1 + i % 3, "overall": 1 + i % 5}
            for i in range(40)
        ]
        path = _write(tmp_path / "scales.jsonl", _jsonl(*rows))
        config = DatasetConfig(
            name="file",
            path=path,
            text_fields=("prompt", "answer"),
            criteria=criteria,
            group_field="doc",
            train_size=16,
            val_size=8,
            test_size=12,
        )
        dataset = load_dataset(config)
        assert dataset.criteria == criteria
        assert dataset.records[39].labels == {"faithful": 1.0, "tone": 1.0, "overall": 5.0}
        splits = split_dataset(dataset, config)
        assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 8, 12)
        _assert_group_disjoint(splits)
        assert splits == split_dataset(dataset, config)

    @pytest.mark.parametrize(
        ("setting", "message"),
        [
            ({"text_fields": (), "criteria": ()}, "dataset 'file' needs text_fields, criteria"),
            ({"path": None}, "dataset 'file' needs path"),
            ({"text_fields": ("text", "text")}, "lists a column twice"),
            ({"criteria": (QUALITY, QUALITY)}, "criteria listed twice: quality"),
            ({"download_url": "http://example.invalid/"}, "download_url only applies"),
        ],
    )
    def test_incomplete_config_is_an_error(self, tmp_path: Path, setting: dict[str, object], message: str) -> None:
        """A 'file' dataset needs a path, text fields and criteria, without repeats, and takes no URL."""
        path = _write(tmp_path / "ok.csv", "text,quality\nfine,3\n")
        base: dict[str, object] = {"name": "file", "path": path, "text_fields": ("text",), "criteria": (QUALITY,)}
        with pytest.raises(DataError, match=message):
            load_dataset(DatasetConfig.model_validate(base | setting))

    @pytest.mark.parametrize(("name", "message"), [("gone.csv", "cannot read"), ("notes.txt", "unsupported file type")])
    def test_unreadable_path_is_an_error(self, tmp_path: Path, name: str, message: str) -> None:
        """A missing file or an unknown suffix is a DataError naming the file."""
        (tmp_path / "notes.txt").write_text("text,quality\n")
        with pytest.raises(DataError, match=message) as caught:
            load_dataset(DatasetConfig(name="file", path=tmp_path / name, text_fields=("text",), criteria=(QUALITY,)))
        assert name in str(caught.value)


_BAD_UTF8 = b"id,text,quality\na,fine,3\nb,caf\xe9,3\n"
_BAD_UTF8_OFFSET = _BAD_UTF8.index(b"\xe9")

# (file name, content, fragments the one-line message must hold besides the file name)
BAD_FILES: dict[str, tuple[str, str | bytes | list[dict[str, object]], tuple[str, ...]]] = {
    "missing column": ("a.csv", "id,text\na,fine\n", ("row 1:", "missing column 'quality'", "available: 'id', 'text'")),
    "empty text": ("a.csv", "id,text,quality\na,fine,3\nb,  ,3\n", ("row 2:", "column 'text'", "empty text")),
    "missing label": ("a.csv", "id,text,quality\na,fine,3\nb,fine,\n", ("row 2:", "column 'quality'", "missing label")),
    "not a number": ("a.csv", "id,text,quality\na,fine,3\nb,fine,good\n", ("row 2:", "'quality'", "not a number")),
    "nan label": ("a.csv", "id,text,quality\na,fine,3\nb,fine,nan\n", ("row 2:", "column 'quality'", "NaN")),
    "out of range": (
        "a.csv",
        "id,text,quality\na,fine,3\nb,fine,6\n",
        ("row 2:", "'quality'", "outside the range 1-5"),
    ),
    "non-integer": ("a.csv", "id,text,quality\na,fine,3\nb,fine,3.5\n", ("row 2:", "'quality'", "not a whole number")),
    "duplicate id": (
        "a.csv",
        "id,text,quality\na,fine,3\nb,fine,3\na,fine,3\n",
        ("row 3:", "column 'id'", "duplicate id 'a'", "also at row 1"),
    ),
    "empty id": ("a.csv", "id,text,quality\na,fine,3\n,fine,3\n", ("row 2:", "column 'id'", "empty id")),
    "ragged row": ("a.csv", "id,text,quality\na,fine,3\nb,fine\n", ("row 2:", "2 fields, but the header has 3")),
    "empty file": ("a.csv", "", ("empty file",)),
    "not utf-8": ("a.csv", _BAD_UTF8, ("line 3:", "not UTF-8", f"byte offset {_BAD_UTF8_OFFSET}")),
    "malformed json line": (
        "a.jsonl",
        _jsonl({"id": "a", "text": "fine", "quality": 3}) + '{"id": "b",\n',
        ("line 2:", "not valid JSON"),
    ),
    "jsonl missing key": (
        "a.jsonl",
        _jsonl({"id": "a", "text": "fine", "quality": 3}, {"id": "b", "text": "fine"}),
        ("row 2:", "missing column 'quality'"),
    ),
    "jsonl null label": (
        "a.jsonl",
        _jsonl({"id": "a", "text": "x", "quality": None}),
        ("row 1:", "'quality'", "missing"),
    ),
    "jsonl text not a string": (
        "a.jsonl",
        _jsonl({"id": "a", "text": 42, "quality": 3}),
        ("row 1:", "column 'text'", "expected text"),
    ),
    "json item not an object": (
        "a.json",
        json.dumps([{"id": "a", "text": "fine", "quality": 3}, ["b"]]),
        ("row 2:", "expected a JSON object"),
    ),
    "json not a list": ("a.json", json.dumps({"id": "a"}), ("expected a JSON list",)),
    "parquet out of range": (
        "a.parquet",
        [{"id": "a", "text": "fine", "quality": 3}, {"id": "b", "text": "fine", "quality": 0}],
        ("row 2:", "column 'quality'", "outside the range"),
    ),
    "parquet nan": (
        "a.parquet",
        [{"id": "a", "text": "fine", "quality": float("nan")}],
        ("row 1:", "'quality'", "NaN"),
    ),
    "parquet unreadable": ("a.parquet", b"PAR1 not really", ("not a readable Parquet file",)),
}


class TestFileValidation:
    @pytest.mark.parametrize("case", list(BAD_FILES))
    def test_bad_data_is_one_line_naming_file_row_and_field(self, tmp_path: Path, case: str) -> None:
        """Each kind of bad data is a single-line DataError naming the file, the row or line, and the column."""
        name, content, fragments = BAD_FILES[case]
        path = _write(tmp_path / name, content)
        config = DatasetConfig(name="file", path=path, text_fields=("text",), criteria=(QUALITY,), id_field="id")
        with pytest.raises(DataError) as caught:
            load_dataset(config)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: ")
        for fragment in fragments:
            assert fragment in message
