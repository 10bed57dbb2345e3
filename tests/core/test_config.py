"""Run-config validation: the shipped config is valid and is the dataclass's defaults; bad keys and values are named."""

import subprocess
import sys
import tomllib

import pytest

from fedtumor.core.config import (
    RunConfig,
    find_app_dir,
    load_run_config,
    read_run_config,
    resolve_output_dir,
)
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


def test_dataclass_defaults_are_the_shipped_app_config_key_for_key():
    """One set of defaults: an installed fedtumor without the app folder reads what `flwr run` reads."""
    shipped = shipped_config()
    defaults = RunConfig().to_run_config()
    assert list(defaults) == list(shipped)  # same keys, in the same order
    for key, value in shipped.items():
        assert defaults[key] == value and type(defaults[key]) is type(value), key


def test_read_run_config_without_an_app_folder_is_the_packaged_defaults_plus_overrides():
    config = read_run_config("num-server-rounds=3 data-dir='/data/x' learning-rate=1 strategy=\"fedprox\"")
    assert config == RunConfig(num_server_rounds=3, data_dir="/data/x", learning_rate=1.0, strategy="fedprox")
    assert read_run_config() == RunConfig() == read_run_config("  ")


def test_read_run_config_of_an_app_folder_starts_from_its_table(tmp_path):
    table = {**RunConfig().to_run_config(), "patch-size": 32, "run-name": "from-app"}
    lines = [f"{key} = {_toml(value)}" for key, value in table.items()]
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app.config]\n" + "\n".join(lines) + "\n")
    config = read_run_config("seed=4", tmp_path)
    assert (config.patch_size, config.run_name, config.seed) == (32, "from-app", 4)
    assert find_app_dir(tmp_path) == tmp_path and find_app_dir(tmp_path / "elsewhere") is None
    assert read_run_config(app_dir=REPO) == RunConfig()  # the checkout's own app: the shipped values


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def test_an_app_folder_without_a_complete_table_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'pyproject.toml'}: no readable .tool.flwr.app.config. table"):
        read_run_config(app_dir=tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.flwr.app.config]\nseed = 1\n")
    assert find_app_dir(tmp_path) == tmp_path  # a Flower app, but one that lacks keys Flower cannot override
    with pytest.raises(ConfigError, match=f"key 'num-server-rounds' is missing from .* in {tmp_path}"):
        read_run_config(app_dir=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("num-server-round=3", "^unknown run-config key 'num-server-round' .did you mean 'num-server-rounds'"),
        ("data-dir='rel'", "^run-config key 'data-dir': 'rel' must be an absolute path$"),
        ("seed='zero'", "^run-config key 'seed': expected int, got str 'zero'$"),
        ("seed=[1", "^cannot parse --run-config 'seed=.1': "),
        ("/nowhere/extra.toml", "^cannot parse --run-config '/nowhere/extra.toml': .*No such file"),
    ],
)
def test_read_run_config_refuses_bad_overrides_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as raised:
        read_run_config(overrides)
    assert "\n" not in str(raised.value)


def test_core_config_imports_no_other_fedtumor_layer():
    """fedtumor.core sits at the bottom: importing its config pulls in neither Flower's app layer nor federation."""
    code = (
        "import sys, fedtumor.core.config; print(sorted(m for m in sys.modules "
        "if m.startswith(('fedtumor.', 'flwr')) and not m.startswith('fedtumor.core')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


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
        ("server-eval-every", -1),
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
