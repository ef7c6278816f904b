"""The shared config checks: each error names the config class, the field and what it allows."""

from dataclasses import dataclass

import pytest

from alignkd.lm.ppo import PPOConfig
from alignkd.mog.sft import SFTConfig
from alignkd.validation import require_int, require_positive


@dataclass
class Toy:
    steps: object = 3
    lr: object = 0.1


@pytest.mark.parametrize("steps", [0, -1, True, 2.0, "3"])
def test_require_int_refuses_non_integers_and_small_values(steps):
    with pytest.raises(ValueError, match=rf"^Toy\.steps = {steps!r}: must be an integer >= 1$".replace("(", r"\(")):
        require_int(Toy(steps=steps), "steps")


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), False, "0.1"])
def test_require_positive_refuses_non_positive_numbers(lr):
    with pytest.raises(ValueError, match=r"^Toy\.lr = .*: must be > 0$"):
        require_positive(Toy(lr=lr), "lr")


def test_valid_values_pass_and_minimum_is_honoured():
    require_int(Toy(steps=0), "steps", minimum=0)
    require_positive(Toy(lr=1), "lr")
    with pytest.raises(ValueError, match="must be an integer >= 2"):
        require_int(Toy(steps=1), "steps", minimum=2)


def test_configs_report_the_field_they_reject():
    with pytest.raises(ValueError, match=r"PPOConfig\.mini_batch_size = 0: must be an integer >= 1"):
        PPOConfig(mini_batch_size=0)
    with pytest.raises(ValueError, match=r"SFTConfig\.learning_rate = -1: must be > 0"):
        SFTConfig(learning_rate=-1)
