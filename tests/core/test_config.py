"""Run-config validation: the shipped config is valid; bad keys and values are named."""

import tomllib

import pytest

from fedtumor.core.config import RunConfig, load_run_config, resolve_output_dir
from fedtumor.core.errors import ConfigError
from tests import REPO


def shipped_config() -> dict:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def test_shipped_config_is_valid_and_complete():
    shipped = shipped_config()
    config = load_run_config(shipped)
    # Every knob is a run-config key with its value in pyproject.toml.
    assert set(shipped) == set(RunConfig().to_run_config())
    assert config.to_run_config() == {
        k: (float(v) if isinstance(getattr(config, k.replace("-", "_")), float) else v) for k, v in shipped.items()
    }


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown run-config key 'num-server-round'.*'num-server-rounds'"):
        load_run_config({"num-server-round": 3})


def test_snake_case_key_is_unknown():
    with pytest.raises(ConfigError, match="'local_epochs'"):
        load_run_config({"local_epochs": 1})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num-server-rounds", "3", "expected int, got str"),
        ("num-server-rounds", 2.5, "expected int, got float"),
        ("augment", 1, "expected bool, got int"),
        ("learning-rate", "fast", "expected float, got str"),
        ("local-epochs", True, "expected int, got bool"),
    ],
)
def test_ill_typed_value_is_named(key, value, message):
    with pytest.raises(ConfigError, match=f"'{key}': {message}"):
        load_run_config({key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num-server-rounds", 0),
        ("patch-size", 50),
        ("fraction-train", 0.0),
        ("val-fraction", 1.0),
        ("spacing-mm", -1.0),
    ],
)
def test_out_of_range_value_is_named(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'.*out of range"):
        load_run_config({key: value})


@pytest.mark.parametrize(
    ("key", "value"), [("model", "vnet"), ("loss", "focal"), ("device", "tpu"), ("synth-shape", 80)]
)
def test_unknown_choice_is_named(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'.*not one of"):
        load_run_config({key: value})


def test_int_is_accepted_where_float_is_expected():
    assert load_run_config({"learning-rate": 1}).learning_rate == 1.0


@pytest.mark.parametrize("key", ["data-dir", "partitions", "heldout", "output-dir"])
def test_paths_must_be_absolute(key):
    with pytest.raises(ConfigError, match=f"'{key}'.*absolute"):
        load_run_config({key: "relative/path"})


def test_output_dir_defaults_under_fedtumor_home(tmp_path, monkeypatch):
    assert resolve_output_dir(load_run_config({"output-dir": str(tmp_path)})) == tmp_path
    monkeypatch.setenv("FEDTUMOR_HOME", str(tmp_path / "home"))
    assert resolve_output_dir(load_run_config({})) == tmp_path / "home" / "runs"
