"""Policies: the study's presets, validation of hand-written policies, and which criteria a call may see."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from judgeopt.core.errors import ConfigError
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.engine.policy import (
    LEARNING_STAGES,
    PER_CRITERION_FIELDS,
    PRESETS,
    REQUIRED_FIELDS,
    ROUTED_FIELDS,
    SHARED_FIELDS,
    STAGE_FIELDS,
    STAGES,
    Policy,
    RoutingState,
    Stage,
    StagePolicy,
    load_policy,
    policy_from_mapping,
    resolve_policy,
    study_policy,
)
from judgeopt.orchestrator.engine.run import policy_of, prepare
from judgeopt.orchestrator.errors import PolicyError

TRACK = ("coherence", "consistency", "fluency", "relevance")


def sss_data() -> dict[str, Any]:
    """The SSS preset as the plain JSON-like mapping a YAML file would hold."""
    data: dict[str, Any] = PRESETS["SSS"].model_dump(mode="json")
    return data


def with_stage(stage: str, **updates: Any) -> dict[str, Any]:
    data = sss_data()
    data[stage] = {**data[stage], **updates}
    return data


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class TestPresets:
    @pytest.mark.parametrize(
        ("name", "letters"), [("SSS", "SSS"), ("SSC", "SSC"), ("SCC", "SCC"), ("CCC", "CCC"), ("single", "SSS")]
    )
    def test_letters(self, name: str, letters: str) -> None:
        """Each preset's loss/gradient/optimizer routings spell its letters (single routes like SSS)."""
        assert PRESETS[name].letters() == letters

    def test_preset_names_are_their_keys(self) -> None:
        """A preset carries its own name, so a run's stored policy says which mode it was."""
        assert {name: policy.name for name, policy in PRESETS.items()} == {name: name for name in PRESETS}

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_judge_is_joint(self, name: str) -> None:
        """In every study mode the judge scores all criteria of its prompt in one call."""
        assert PRESETS[name].judge.routing == "joint"

    @pytest.mark.parametrize(
        ("name", "letters"), [("SSS", "SSS"), ("SSC", "SSC"), ("SCC", "SCC"), ("CCC", "CCC"), ("single", "CCC")]
    )
    def test_study_letters(self, name: str, letters: str) -> None:
        """Under the study protocol each preset keeps its letters, but Single-Task runs CCC on each one-criterion
        track, as the study ran it; it stays Single-Task (its name, independent tracks) and its optimizer sees the
        conversations like every study preset's."""
        policy = study_policy(name)
        assert (policy.letters(), policy.name) == (letters, name)
        assert policy.independent_criteria == (name == "single")
        assert "conversations" in policy.optimizer.fields

    def test_only_single_has_independent_criteria(self) -> None:
        """Single-Task is the one preset that optimizes each criterion on its own track."""
        assert {name for name, policy in PRESETS.items() if policy.independent_criteria} == {"single"}

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_loss_sees_only_the_evidence(self, name: str) -> None:
        """The study's loss sees exactly the prediction, the ground truth and the verdict."""
        assert PRESETS[name].loss.fields == {"prediction", "ground_truth", "verdict"}

    @pytest.mark.parametrize("name", ["SSS", "SSC", "single"])
    def test_per_criterion_gradient_fields(self, name: str) -> None:
        """A per-criterion gradient sees its own instruction, the sample, prediction and critique, not the truth."""
        gradient = PRESETS[name].gradient
        assert gradient.routing == "per_criterion"
        assert gradient.scope == "own"
        assert gradient.fields == {"task_description", "instruction", "sample", "prediction", "critique"}

    @pytest.mark.parametrize("name", ["SCC", "CCC"])
    def test_joint_gradient_sees_the_judge_output(self, name: str) -> None:
        """A joint gradient additionally sees the judge's raw output."""
        gradient = PRESETS[name].gradient
        assert gradient.routing == "joint"
        assert gradient.fields == {
            "task_description",
            "instruction",
            "sample",
            "judge_output",
            "prediction",
            "critique",
        }

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_presets_stay_within_the_contract(self, name: str) -> None:
        """Every preset grants only fields its stages can carry, and all the fields they need."""
        policy = PRESETS[name]
        for stage in STAGES:
            fields = policy.stage(stage).fields
            assert REQUIRED_FIELDS[stage] <= fields <= STAGE_FIELDS[stage], stage

    def test_field_vocabulary_is_partitioned(self) -> None:
        """Every contract field is shared, per-criterion or routed (the call's focus's), exactly one of them."""
        every = frozenset().union(*STAGE_FIELDS.values())
        assert not SHARED_FIELDS & PER_CRITERION_FIELDS
        assert not ROUTED_FIELDS & (SHARED_FIELDS | PER_CRITERION_FIELDS)
        assert every <= SHARED_FIELDS | PER_CRITERION_FIELDS | ROUTED_FIELDS

    def test_presets_roundtrip_through_mapping(self) -> None:
        """A preset dumped to JSON-like data validates back to an equal policy (what a run stores and audits)."""
        for name, policy in PRESETS.items():
            assert policy_from_mapping(policy.model_dump(mode="json"), origin=name) == policy


def _combined_then_separate() -> dict[str, Any]:
    return with_stage("loss", routing="joint", scope="all")


def _unknown_stage() -> dict[str, Any]:
    return {**sss_data(), "critic": {"routing": "joint", "fields": []}}


def _missing_stage() -> dict[str, Any]:
    data = sss_data()
    del data["optimizer"]
    return data


def _unknown_field() -> dict[str, Any]:
    return with_stage("loss", fields=["prediction", "sample_text"])


def _field_of_another_stage() -> dict[str, Any]:
    return with_stage("optimizer", fields=["instruction", "gradient", "critique"])


def _missing_required_field() -> dict[str, Any]:
    return with_stage("gradient", fields=["sample", "critique"])


def _judge_per_criterion_sees_all() -> dict[str, Any]:
    return with_stage("judge", routing="per_criterion", scope="all")


def _judge_per_criterion_sees_list() -> dict[str, Any]:
    return with_stage("judge", routing="per_criterion", scope=["fluency"])


def _joint_with_criteria_list() -> dict[str, Any]:
    return with_stage("optimizer", routing="joint", scope=["fluency"])


def _prefix_shared_loss() -> dict[str, Any]:
    return with_stage("loss", routing="prefix_shared")


def _bad_routing() -> dict[str, Any]:
    return with_stage("gradient", routing="sometimes")


INVALID: list[tuple[str, Callable[[], dict[str, Any]], tuple[str, ...]]] = [
    ("combined-then-separate", _combined_then_separate, ("'gradient'", "'loss'", "per_criterion")),
    ("unknown-stage", _unknown_stage, ("unknown stage", "'critic'")),
    ("missing-stage", _missing_stage, ("'optimizer'", "not defined")),
    ("unknown-field", _unknown_field, ("stage 'loss'", "unknown field", "'sample_text'")),
    ("field-of-another-stage", _field_of_another_stage, ("stage 'optimizer'", "'critique'")),
    ("missing-required-field", _missing_required_field, ("stage 'gradient'", "'instruction'")),
    ("judge-per-criterion-all", _judge_per_criterion_sees_all, ("stage 'judge'", "own")),
    ("judge-per-criterion-list", _judge_per_criterion_sees_list, ("stage 'judge'", "own")),
    ("joint-with-list", _joint_with_criteria_list, ("stage 'optimizer'", "joint")),
    ("prefix-shared-loss", _prefix_shared_loss, ("stage 'loss'", "prefix_shared is a judge routing")),
    ("bad-routing", _bad_routing, ("gradient", "per_criterion", "joint")),
]


class TestValidation:
    @pytest.mark.parametrize(("build", "expected"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
    def test_mapping_refused_on_one_line(self, build: Callable[[], dict[str, Any]], expected: tuple[str, ...]) -> None:
        """An invalid policy mapping is one PolicyError line naming the origin and the offending stage."""
        with pytest.raises(PolicyError) as caught:
            policy_from_mapping(build(), origin="p.yaml")
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("p.yaml: ")
        for part in expected:
            assert part in message

    @pytest.mark.parametrize(("build", "expected"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
    def test_yaml_file_refused_on_one_line(
        self, tmp_path: Path, build: Callable[[], dict[str, Any]], expected: tuple[str, ...]
    ) -> None:
        """The same policy in a YAML file is one PolicyError line naming the file and the offending stage."""
        path = write_yaml(tmp_path / "mine.yaml", build())
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: ")
        for part in expected:
            assert part in message

    def test_combined_then_separate_names_both_stages_in_order(self) -> None:
        """Joint loss then per-criterion gradient: the gradient is the offender, the loss the joint stage before."""
        with pytest.raises(PolicyError, match=r"stage 'gradient': per_criterion after the joint stage 'loss'"):
            policy_from_mapping(_combined_then_separate(), origin="p.yaml")

    def test_later_offender_is_named(self) -> None:
        """Joint gradient then per-criterion optimizer names the optimizer and the gradient."""
        data = with_stage("gradient", routing="joint", scope="all")
        with pytest.raises(PolicyError, match=r"stage 'optimizer': per_criterion after the joint stage 'gradient'"):
            policy_from_mapping(data, origin="p.yaml")

    def test_policy_error_is_a_config_error(self) -> None:
        """A bad policy is a configuration problem (the CLI reports it as a usage error)."""
        with pytest.raises(ConfigError):
            policy_from_mapping(_unknown_stage(), origin="p.yaml")

    @pytest.mark.parametrize("letters", ["SSS", "SSC", "SCC", "CCC"])
    def test_monotone_routings_are_accepted(self, letters: str) -> None:
        """Any per-criterion prefix followed by joint stages is valid."""
        data = sss_data()
        for stage, letter in zip(LEARNING_STAGES, letters, strict=True):
            if letter == "C":
                data[stage] = {**data[stage], "routing": "joint", "scope": "all"}
        assert policy_from_mapping(data, origin="p.yaml").letters() == letters

    @pytest.mark.parametrize("letters", ["CSS", "CSC", "CCS", "SCS"])
    def test_separate_after_combined_refused(self, letters: str) -> None:
        """Any per-criterion stage after a joint one is refused."""
        data = sss_data()
        for stage, letter in zip(LEARNING_STAGES, letters, strict=True):
            if letter == "C":
                data[stage] = {**data[stage], "routing": "joint", "scope": "all"}
        with pytest.raises(PolicyError, match="per_criterion after the joint stage"):
            policy_from_mapping(data, origin="p.yaml")

    def test_per_criterion_judge_with_own_scope_accepted(self) -> None:
        """A per-criterion judge is fine as long as it sees only its own instruction."""
        policy = policy_from_mapping(with_stage("judge", routing="per_criterion", scope="own"), origin="p.yaml")
        assert policy.judge.routing == "per_criterion"

    def test_loss_needs_no_field(self) -> None:
        """The loss has no required field: an empty field list is a valid (if blind) loss."""
        policy = policy_from_mapping(with_stage("loss", fields=[]), origin="p.yaml")
        assert policy.loss.fields == frozenset()

    def test_unknown_criterion_in_scope(self) -> None:
        """A scope list naming a criterion the run lacks is one PolicyError line naming policy, stage, criterion."""
        policy = policy_from_mapping(with_stage("gradient", scope=["fluency", "humour"]), origin="p.yaml")
        with pytest.raises(PolicyError) as caught:
            policy.check_criteria(["coherence", "fluency"])
        message = str(caught.value)
        assert "\n" not in message
        assert "stage 'gradient'" in message
        assert "'humour'" in message
        assert "coherence, fluency" in message

    def test_known_criteria_in_scope_pass(self) -> None:
        """A scope list of the run's criteria passes the check."""
        policy = policy_from_mapping(with_stage("loss", scope=["fluency"]), origin="p.yaml")
        policy.check_criteria(["coherence", "fluency"])
        assert policy.loss.scope == ("fluency",)

    def test_yaml_file_loads_with_its_stem_as_name(self, tmp_path: Path) -> None:
        """A valid YAML policy loads, named after its file unless it names itself."""
        data = sss_data()
        del data["name"]
        loaded = load_policy(write_yaml(tmp_path / "careful.yaml", data))
        assert loaded.name == "careful"
        assert loaded.model_dump(exclude={"name"}) == PRESETS["SSS"].model_dump(exclude={"name"})
        named = load_policy(write_yaml(tmp_path / "other.yaml", {**data, "name": "mine"}))
        assert named.name == "mine"

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing policy file is one PolicyError line naming the file."""
        path = tmp_path / "absent.yaml"
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: cannot read policy file")

    def test_directory_is_unreadable(self, tmp_path: Path) -> None:
        """A directory given as the policy file is reported, not a traceback."""
        with pytest.raises(PolicyError, match="cannot read policy file"):
            load_policy(tmp_path)

    def test_not_yaml(self, tmp_path: Path) -> None:
        """Broken YAML is one PolicyError line naming the file."""
        path = tmp_path / "broken.yaml"
        path.write_text("judge: [unclosed\n  loss: {\n", encoding="utf-8")
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: not valid YAML")

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are reported like broken YAML."""
        path = tmp_path / "binary.yaml"
        path.write_bytes(b"\xff\xfe\x00judge")
        with pytest.raises(PolicyError, match="not valid YAML"):
            load_policy(path)

    @pytest.mark.parametrize("text", ["- judge\n- loss\n", "", "just a string\n", "42\n"])
    def test_yaml_that_is_not_a_mapping(self, tmp_path: Path, text: str) -> None:
        """A YAML list, scalar or empty document is refused as not a mapping of stages."""
        path = tmp_path / "list.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "must be a mapping" in message and "\n" not in message

    def test_unknown_keys_of_mixed_types(self, tmp_path: Path) -> None:
        """YAML keys that are not all strings (here 1 and 'critic') are still one PolicyError line."""
        path = tmp_path / "odd.yaml"
        path.write_text(yaml.safe_dump(sss_data()) + "1: x\ncritic: y\n", encoding="utf-8")
        with pytest.raises(PolicyError, match="unknown stage"):
            load_policy(path)

    def test_stage_policy_forbids_extra_keys(self) -> None:
        """A misspelt stage key (``field`` for ``fields``) is refused, naming the stage."""
        data = sss_data()
        data["loss"] = {"routing": "per_criterion", "field": ["prediction"], "fields": ["prediction"]}
        with pytest.raises(PolicyError, match=r"loss\.field"):
            policy_from_mapping(data, origin="p.yaml")

    def test_input_mapping_is_not_mutated(self) -> None:
        """Validation leaves the caller's mapping as it was."""
        data = sss_data()
        before = copy.deepcopy(data)
        policy_from_mapping(data, origin="p.yaml")
        assert data == before


class TestResolve:
    def test_unknown_mode_lists_presets(self) -> None:
        """An unknown mode name is a PolicyError that lists every preset."""
        with pytest.raises(PolicyError) as caught:
            resolve_policy("XYZ", None)
        message = str(caught.value)
        assert "'XYZ'" in message
        for name in PRESETS:
            assert name in message

    def test_default_is_sss(self) -> None:
        """No mode and no file means the SSS preset."""
        assert resolve_policy(None, None) is PRESETS["SSS"]

    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_named_preset(self, name: str) -> None:
        """A preset name resolves to that preset."""
        assert resolve_policy(name, None) is PRESETS[name]

    def test_file_wins_over_mode(self, tmp_path: Path) -> None:
        """A policy file is used even when a mode is named too."""
        data = PRESETS["CCC"].model_dump(mode="json")
        del data["name"]
        policy = resolve_policy("SSS", write_yaml(tmp_path / "ccc-like.yaml", data))
        assert policy.letters() == "CCC"
        assert policy.name == "ccc-like"


def _policy_with(stage: str, routing: str, scope: object) -> Policy:
    data = sss_data()
    if stage == "loss" and routing == "joint":
        for later in LEARNING_STAGES:
            data[later] = {**data[later], "routing": "joint"}
    data[stage] = {**data[stage], "routing": routing, "scope": scope}
    return Policy.model_validate(data)


def _visible(policy: Policy, stage: Stage, focus: Sequence[str], track: tuple[str, ...] = TRACK) -> tuple[str, ...]:
    return policy.view(stage, focus, RoutingState(0, track)).visible


class TestView:
    """``Policy.view``: what one call may see. The focus comes first, then the other visible criteria in track order."""

    def test_own_scope(self) -> None:
        """Scope own: a per-criterion call sees only its own criterion."""
        policy = _policy_with("loss", "per_criterion", "own")
        assert _visible(policy, "loss", ["fluency"]) == ("fluency",)

    def test_all_scope(self) -> None:
        """Scope all: a per-criterion call sees every criterion of the track, its own first."""
        policy = _policy_with("gradient", "per_criterion", "all")
        assert _visible(policy, "gradient", ["relevance"]) == ("relevance", "coherence", "consistency", "fluency")

    def test_list_scope_adds_listed_criteria_in_track_order(self) -> None:
        """A scope list adds the listed criteria to the call's own, ordered as in the track."""
        policy = _policy_with("optimizer", "per_criterion", ["relevance", "coherence"])
        assert _visible(policy, "optimizer", ["fluency"]) == ("fluency", "coherence", "relevance")

    def test_list_scope_that_includes_own(self) -> None:
        """Listing the call's own criterion does not duplicate it."""
        policy = _policy_with("loss", "per_criterion", ["fluency", "coherence"])
        assert _visible(policy, "loss", ["fluency"]) == ("fluency", "coherence")

    def test_list_scope_outside_track_is_dropped(self) -> None:
        """Listed criteria that are not on this track are not visible (Single-Task tracks hold one criterion)."""
        policy = _policy_with("loss", "per_criterion", ["relevance"])
        assert _visible(policy, "loss", ["fluency"], ("fluency",)) == ("fluency",)

    @pytest.mark.parametrize("scope", ["own", "all"])
    def test_a_joint_call_sees_all_and_an_added_per_criterion_call_its_own(self, scope: str) -> None:
        """A joint call (about the whole track) sees every criterion whatever its scope says; a per-criterion call
        that a dynamic policy adds to a joint stage (a fallback) sees only its own criterion."""
        policy = _policy_with("loss", "joint", scope)
        assert _visible(policy, "loss", TRACK) == TRACK
        assert _visible(policy, "loss", ["fluency"]) == ("fluency",)
        assert policy.view("loss", TRACK, RoutingState(0, TRACK)).routing == "joint"
        assert policy.view("loss", ["fluency"], RoutingState(0, TRACK)).routing == "per_criterion"

    def test_focus_keeps_its_order_then_track_order(self) -> None:
        policy = _policy_with("gradient", "per_criterion", "all")
        assert _visible(policy, "gradient", ["relevance", "coherence"]) == (
            "relevance",
            "coherence",
            "consistency",
            "fluency",
        )

    def test_sss_preset_visibility(self) -> None:
        """The SSS preset: the judge sees all, the learning stages only their own criterion."""
        policy = PRESETS["SSS"]
        assert _visible(policy, "judge", TRACK) == TRACK
        for stage in LEARNING_STAGES:
            assert _visible(policy, stage, ["fluency"]) == ("fluency",)

    @pytest.mark.parametrize("mode", ["SSS", "SSC", "SCC", "CCC"])
    def test_calls_follow_the_routing(self, mode: str) -> None:
        """A joint stage makes one call about the whole track; a per-criterion stage one call per criterion."""
        policy = PRESETS[mode]
        for stage in STAGES:
            calls = policy.calls(stage, RoutingState(0, TRACK))
            expected = [TRACK] if policy.stage(stage).routing == "joint" else [(c,) for c in TRACK]
            assert calls == expected

    def test_allowed_pairs_follow_the_view(self) -> None:
        view = PRESETS["SSS"].view("loss", ["fluency"], RoutingState(0, TRACK))
        assert view.allowed() == {"fluency:prediction", "fluency:ground_truth", "fluency:verdict"}


class TestStagePolicy:
    def test_defaults(self) -> None:
        """A stage policy defaults to scope own and the copy handoff."""
        stage = StagePolicy(routing="per_criterion", fields=frozenset({"instruction"}))
        assert (stage.scope, stage.handoff) == ("own", "copy")

    def test_frozen(self) -> None:
        """Policies are immutable once validated."""
        with pytest.raises(ValueError, match="frozen"):
            PRESETS["SSS"].loss.routing = "joint"  # type: ignore[misc]


def test_study_protocol_refuses_a_prefix_shared_judge(tmp_path: Path) -> None:
    """The study's templates have no prefix-shared layout: such a run is refused before any service starts."""
    judge = {"routing": "prefix_shared", "fields": ["task_description", "instruction", "sample"]}
    path = write_yaml(tmp_path / "mine.yaml", with_stage("judge", **judge))
    config = RunConfig(prompt_protocol="study", policy_file=path)
    with pytest.raises(PolicyError, match="no prefix-shared judge layout"):
        prepare(config, ModelsConfig(), None)
    assert (
        prepare(config.model_copy(update={"prompt_protocol": "judgeopt"}), ModelsConfig(), None).policy.judge.routing
        == "prefix_shared"
    )


class TestJudgeRoutingSetting:
    """``judge_routing`` (``--judge-routing``) reroutes the judge of any mode or policy file, and only the judge."""

    @pytest.mark.parametrize("routing", ["joint", "per_criterion", "prefix_shared"])
    @pytest.mark.parametrize("mode", ["CCC", "single"])
    def test_it_reroutes_only_the_judge(self, mode: str, routing: Any) -> None:
        policy = policy_of(RunConfig(mode=mode, judge_routing=routing))
        preset = PRESETS[mode]
        assert policy.judge.routing == routing and policy.judge.fields == preset.judge.fields
        assert policy.judge.scope == ("own" if routing == "per_criterion" else "all")
        assert [policy.stage(s) for s in LEARNING_STAGES] == [preset.stage(s) for s in LEARNING_STAGES]
        assert (policy.name, policy.independent_criteria) == (preset.name, preset.independent_criteria)
        assert policy_of(RunConfig(mode=mode)) == preset  # unset: the mode's own judge

    def test_it_overrides_a_policy_file_and_keeps_its_judge_valid(self, tmp_path: Path) -> None:
        """A policy file's joint judge (scope all) becomes a valid per-criterion judge: scope own, as the rules ask."""
        judge = {"routing": "joint", "fields": ["task_description", "instruction", "sample"], "scope": "all"}
        path = write_yaml(tmp_path / "mine.yaml", with_stage("judge", **judge))
        policy = policy_of(RunConfig(policy_file=path, judge_routing="per_criterion"))
        assert (policy.judge.routing, policy.judge.scope) == ("per_criterion", "own")
        assert policy.model_copy(update={"judge": load_policy(path).judge}) == load_policy(path)  # nothing else moved

    def test_the_study_protocol_refuses_a_prefix_shared_judge_routing(self) -> None:
        with pytest.raises(PolicyError, match="policy 'SSS': the study's prompt protocol has no prefix-shared"):
            policy_of(RunConfig(prompt_protocol="study", judge_routing="prefix_shared"))
        assert policy_of(RunConfig(prompt_protocol="study", judge_routing="joint")).judge.routing == "joint"

    def test_an_unknown_routing_names_the_setting(self) -> None:
        with pytest.raises(ValueError, match="judge_routing"):
            RunConfig(judge_routing="sideways")  # type: ignore[arg-type]
