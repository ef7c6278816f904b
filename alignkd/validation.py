"""Field checks shared by the config dataclasses: each error names the config, the field and what it allows.

    require_int(config, "n_iterations", "batch_size")        # integers >= 1 (bools refused)
    require_int(config, "n_iterations", minimum=0)
    require_positive(config, "learning_rate", "beta")          # numbers > 0
    require_choice(config, "kl_form", ("k3", "reward"))       # one of the allowed values
"""

from __future__ import annotations


def _label(config, name: str) -> str:
    return f"{type(config).__name__}.{name}"


def require_int(config, *names: str, minimum: int = 1) -> None:
    """Every named field of `config` is an int (not a bool) >= `minimum`."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{_label(config, name)} = {value!r}: must be an integer >= {minimum}")


def require_positive(config, *names: str) -> None:
    """Every named field of `config` is a number > 0."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{_label(config, name)} = {value!r}: must be > 0")


def require_choice(config, name: str, allowed) -> None:
    """The named field of `config` is one of `allowed`."""
    value = getattr(config, name)
    if value not in allowed:
        raise ValueError(f"{_label(config, name)} = {value!r}: must be one of {', '.join(map(str, allowed))}")
