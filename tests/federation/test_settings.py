"""The federation-only run-config checks: FeTS hook specs and fault plans, refused in one line naming the key."""

import pytest

from fedtumor.core.config import RunConfig, read_run_config
from fedtumor.core.errors import ConfigError
from fedtumor.federation.settings import check_federation_keys


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("collaborator-selection", "best-sites", "'best-sites' is not one of all-sites, random-fraction"),
        ("collaborator-selection", "random-fraction fraction=0", "random-fraction: fraction must be in \\(0, 1\\]"),
        ("round-hyperparameters", "step-decay every=0", "step-decay: every must be an integer >= 1"),
        ("fault-injection", "site-1:explode@1", "'site-1:explode@1': fault 'explode' is not one of raise"),
        ("fault-injection", "site-1:raise@0", "'site-1:raise@0': rounds start at 1"),
    ],
)
def test_a_bad_plugin_spec_is_refused_naming_the_key(key, value, message):
    config = RunConfig(**{key.replace("-", "_"): value})  # types and ranges are fine: core accepts it
    with pytest.raises(ConfigError, match=f"^run-config key '{key}': .*{message}") as raised:
        check_federation_keys(config)
    assert "\n" not in str(raised.value)


def test_valid_specs_pass_unchanged():
    config = read_run_config(
        "collaborator-selection='largest-first k=2' round-hyperparameters='step-decay factor=0.5 every=2' "
        "fault-injection='site-2:raise@1 site-3:nan@2'"
    )
    assert check_federation_keys(config) is config
    assert check_federation_keys(RunConfig()) == RunConfig()
