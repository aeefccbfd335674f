"""Splitting a dataset into train, validation and test: seeded, and disjoint by group (SummEval: the article)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import structlog

from judgeopt.orchestrator.data.records import Dataset, DatasetConfig, Record, Splits
from judgeopt.orchestrator.errors import DataError

log = structlog.get_logger(__name__)


def split_dataset(dataset: Dataset, config: DatasetConfig) -> Splits:
    """Seeded train/val/test splits: the study's fixed split for ``summeval-wgc``, group-disjoint otherwise."""
    rng = random.Random(config.seed)
    splits = (
        _split_wgc(dataset, config, rng) if dataset.name == "summeval-wgc" else _split_by_group(dataset, config, rng)
    )
    log.info(
        "data.split",
        dataset=dataset.name,
        seed=config.seed,
        train=len(splits.train),
        val=len(splits.val),
        test=len(splits.test),
        val_overlaps_train=config.val_overlaps_train,
    )
    return splits


def _draw(records: Sequence[Record], count: int, rng: random.Random) -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """``count`` records chosen with ``rng``, and the rest; both keep the order of ``records``."""
    chosen = set(rng.sample(range(len(records)), count))
    return (
        tuple(record for i, record in enumerate(records) if i in chosen),
        tuple(record for i, record in enumerate(records) if i not in chosen),
    )


def _split_by_group(dataset: Dataset, config: DatasetConfig, rng: random.Random) -> Splits:
    """Fill test, then val, then train with whole groups taken in seeded order.

    The group that would overflow a split is trimmed to a seeded sample of the rows that fit, so every split has
    exactly its size; the trimmed group's other rows go unused, so that no group straddles two splits. Test is filled
    first so that it stays the same when only the train or val size changes.
    """
    groups: dict[str, list[Record]] = {}
    for record in dataset.records:
        groups.setdefault(record.group, []).append(record)
    order = list(groups)
    rng.shuffle(order)
    remaining = iter(order)
    val_size = 0 if config.val_overlaps_train else config.val_size
    filled: list[tuple[Record, ...]] = []
    for size in (config.test_size, val_size, config.train_size):
        taken: list[Record] = []
        while len(taken) < size:
            group = next(remaining, None)
            if group is None:
                raise DataError(
                    f"{dataset.name}: test {config.test_size} + val {val_size} + train {config.train_size} records "
                    f"requested, but there are {len(dataset.records)} in {len(groups)} groups (a group never "
                    f"straddles two splits, and the rest of a trimmed group is not used)"
                )
            rows = groups[group]
            room = size - len(taken)
            taken += rows if len(rows) <= room else _draw(rows, room, rng)[0]
        filled.append(tuple(taken))
    test, val, train = filled
    if config.val_overlaps_train:
        _check_val_within_train(dataset.name, config.val_size, len(train))
        val = _draw(train, config.val_size, rng)[0]
    return Splits(train=train, val=val, test=test)


def _check_val_within_train(name: str, val_size: int, train_size: int) -> None:
    if val_size > train_size:
        raise DataError(
            f"{name}: val_size {val_size} is larger than train_size {train_size}, "
            "but with val_overlaps_train the validation rows are drawn from the training rows"
        )


def _split_wgc(dataset: Dataset, config: DatasetConfig, rng: random.Random) -> Splits:
    """The study's train and test files, with ``val_size`` rows drawn from train.

    The drawn rows leave train (160 - 100 = 60 rows with the defaults, all the study's data allows) unless
    ``val_overlaps_train``, the study's own setting, keeps all 160 in train. ``test_size`` rows of the test file are
    used: all 480 by default (the study's test set), a seeded sample of them when smaller. Likewise ``train_size``
    caps the training rows: a seeded sample of them when smaller than what remains (the default, 160, takes them
    all; with ``val_overlaps_train`` validation is drawn from the sampled rows). A size larger than its file is an
    error.
    """
    train = tuple(record for record in dataset.records if record.id.startswith("train-"))
    test = tuple(record for record in dataset.records if record.id.startswith("test-"))
    for setting, size, available in (
        ("train_size", config.train_size, len(train)),
        ("val_size", config.val_size, len(train)),
        ("test_size", config.test_size, len(test)),
    ):
        if size > available:
            raise DataError(
                f"summeval-wgc: {setting} {size} is larger than the {available} rows available "
                f"(train {len(train)}, test {len(test)}, total {len(dataset.records)})"
            )
    if config.val_overlaps_train:
        train = _sample(train, config.train_size, rng)
        _check_val_within_train(dataset.name, config.val_size, len(train))
        val = _draw(train, config.val_size, rng)[0]
    else:
        val, rest = _draw(train, config.val_size, rng)
        train = _sample(rest, config.train_size, rng)
    return Splits(train=train, val=val, test=_sample(test, config.test_size, rng))


def _sample(records: tuple[Record, ...], size: int, rng: random.Random) -> tuple[Record, ...]:
    """``size`` of ``records`` drawn with ``rng`` (in their order), or all of them when there are no more."""
    return records if size >= len(records) else _draw(records, size, rng)[0]
