"""Every number a user gives, checked in one place: finite and in range, before any work starts.

`check_options(command, values)` runs on every command's parsed options (the CLI's `user_errors`
wrapper calls it), so a numeric option is never accepted silently as NaN, infinity, or a value
that makes no sense; `number(text, what, rule)` is the same check for numbers inside option values
(the WEIGHT of `NAME:WEIGHT`, the entries of `--scales`). A failure is an InputError naming the option
and its range. Options not in RULES are still checked to be finite (floats) and to fit in 64 bits (ints).

No heavy imports here: the checks run before torch loads, so a bad value fails in well under a second.
"""

import math
from dataclasses import dataclass

from dglm_cli.errors import InputError

INT64 = 2**63 - 1


@dataclass(frozen=True)
class Rule:
    """low <= value <= high (an open end excludes the bound); `at_least_one` for counts."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_show(self.low)}, {_show(self.high)}{')' if self.high_open else ']'}"
        if self.low == 0 and self.low_open:
            return "positive"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_show(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_show(self.high)}"
        return "a finite number"

    def holds(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


COUNT = Rule(1, 10**9)  # steps, samples, batch sizes: at least one, and small enough to allocate
NON_NEGATIVE = Rule(0)
POSITIVE = Rule(0, low_open=True)
SHARE = Rule(0, 1)
SEED = Rule(0, 2**32 - 1)  # numpy and CUDA generators take 32-bit seeds; record i gets seed + i

# option (parameter name) -> rule, for every command that has the option; a command-specific rule
# is keyed "command.option".
RULES: dict[str, Rule] = {
    # generation (generate, sweep)
    "guidance": NON_NEGATIVE, "cfg": NON_NEGATIVE, "decoder_cfg": NON_NEGATIVE, "steer": NON_NEGATIVE,
    "steps": Rule(1, 10_000), "num_samples": COUNT, "max_new_tokens": Rule(1, 10**6), "top_p": Rule(0, 1, low_open=True),
    "temperature": Rule(0, 100), "repetition_penalty": Rule(0, 100, low_open=True), "mc_samples": Rule(1, 4096),
    "renoise": Rule(0, 1, low_open=True), "seed": SEED, "batch_size": COUNT, "scale": NON_NEGATIVE,
    # scoring
    "limit": Rule(0), "max_disagreement": SHARE,
    # classifiers
    "C": POSITIVE, "test_size": Rule(0, 1, low_open=True, high_open=True),
    # training
    "max_steps": COUNT, "time_budget": POSITIVE, "lr": POSITIVE, "lm_lr": POSITIVE, "warmup": Rule(0, 10**9),
    "eval_every": COUNT, "save_every": COUNT, "max_tokens": Rule(2, 10**6), "min_tokens": Rule(1, 10**6),
    "splits_per_chunk": Rule(1, 10**4), "val_size": Rule(0, 10**9), "lora_rank": Rule(0, 4096), "bag_of_words_weight": NON_NEGATIVE,
    "candidates": Rule(0, 10**6), "rank": Rule(1, 10**5), "strength": NON_NEGATIVE, "kl_weight": NON_NEGATIVE,
    "teacher_weight": SHARE, "teacher_cfg": NON_NEGATIVE, "contrast_cfg": NON_NEGATIVE, "epochs": COUNT, "patience": Rule(0, 10**6),
    # an attribute's WEIGHT in NAME:WEIGHT (--avoid pushes away: weights are positive)
    "weight": Rule(0, 1000, low_open=True),
}


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(value, what: str, rule: Rule | None = None) -> None:
    """Raise an InputError unless `value` is finite, fits in 64 bits, and satisfies `rule`."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, not {value}")
    if isinstance(value, int) and abs(value) > INT64:
        raise InputError(f"{what} is too large ({len(str(abs(value)))} digits)")
    if rule is not None and not rule.holds(value):
        raise InputError(f"{what} must be {rule.describe()}, not {value}")


def check_options(command: str, values: dict) -> None:
    """Check every int and float among a command's parsed options (lists element by element)."""
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                check(item, option_name(name), RULES.get(f"{command}.{name}", RULES.get(name)))


def number(text: str, what: str, rule: Rule | None = None) -> float:
    """A number written inside an option value, checked like an option ('nan', 'inf', '1e999' refused)."""
    try:
        value = float(text)
    except (ValueError, OverflowError):
        raise InputError(f"{what}: {text!r} is not a number") from None
    check(value, what, rule)
    return value


def is_number(text: str) -> bool:
    """Whether `text` is written as a number (finite or not): the parser then treats it as one."""
    try:
        float(text)
    except (ValueError, OverflowError):
        return False
    return True


def weighted_name(text: str, what: str = "attribute") -> tuple[list[str], float]:
    """`NAME[:NAME...][:WEIGHT]` -> (the names, the weight; 1 when none is written). A last part written as
    a number is the weight, which must be finite and in RULES['weight'] (--avoid pushes away)."""
    parts = text.strip().split(":")
    weight = 1.0
    if len(parts) > 1 and is_number(parts[-1]):
        where = f"{what} {text!r}: the weight"
        weight = number(parts.pop(), where)
        if weight <= 0:
            raise InputError(f"{what} {text!r}: the weight must be positive (use --avoid to push away)")
        check(weight, where, RULES["weight"])
    return parts, weight
