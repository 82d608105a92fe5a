"""What a Bio-FO learner is, without torch: its options, heads, state keys and optimizer slots.

Two engines run Bio-FO: the torch rule (``models.rules.biofo``) and the ONNX graphs that plain
onnxruntime runs (``models.biofo_onnx``). Both read the rule's definition from here, so an
option, a default or a state key is written once:

- ``Options``: the rule's options (a spec's ``rule_options``), their defaults and their checks;
- ``DEFAULTS``: the spec fields a Bio-FO spec may leave out (``Rule.defaults``);
- heads: which fixed matrix ``B_k`` hidden layer k reads (``own_head``, ``head_key``) and what
  using it costs (``head_macs_per_sample``);
- the rule's state keys (``head_key``, ``STEPS``) and the optimizer's (``optimizer_slots``).

The optimizer names mirror ``models.optim`` (what ``describe()`` returns and what each optimizer
keeps per parameter); tests/test_engine_onnxruntime.py compares them, and ``OrtLearner`` refuses
a checkpoint whose keys differ from the ones built from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

NAME = "biofo"
HEADS = ("gaussian", "ternary")
SCHEDULES = ("simultaneous", "greedy")

DEFAULTS: dict[str, Any] = {
    "activation": "relu",
    "init": "default",
    "optimizer": {"name": "adam", "lr": 3e-4},
}

# The rule's state, by the names ``Rule.state_dict()`` gives them (the learner prefixes "rule.").
STEPS = "steps"  # learn calls so far (the greedy schedule's position)


def head_key(index: int) -> str:
    """The stored head of hidden layer ``index`` (when ``own_head``)."""
    return f"heads.{index}"


def own_head(index: int, depth: int, shared: bool) -> bool:
    """Whether hidden layer ``index`` has a stored head of its own. Otherwise it reads the
    network's read-out weight: the last layer's head is installed as the read-out, and a shared
    (ternary) head is that same matrix for every layer."""
    return not shared and index < depth - 1


def head_macs_per_sample(classes: int, width: int) -> int:
    """``a_k = B_k h_k`` and ``δh_k = B_kᵀ δa_k``: two products with the ``C × n_k`` head."""
    return 2 * classes * width


@dataclass(frozen=True)
class Options:
    """A Bio-FO rule's options, checked (what each one does: ``models.rules.biofo``)."""

    head: str = "gaussian"
    head_scale: float | None = None
    schedule: str = "simultaneous"
    greedy_steps: int = 1000
    early_exit: float | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"biofo head must be one of {HEADS}, got {self.head!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"biofo schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.greedy_steps < 1:
            raise ValueError(f"biofo greedy_steps must be >= 1, got {self.greedy_steps}")
        if self.early_exit is not None and not 0.0 < self.early_exit <= 1.0:
            raise ValueError(f"biofo early_exit must be in (0, 1], got {self.early_exit}")
        if self.head_scale is not None:
            if self.head_scale <= 0:
                raise ValueError(f"biofo head_scale must be positive, got {self.head_scale}")
            object.__setattr__(self, "head_scale", float(self.head_scale))

    @property
    def shared_head(self) -> bool:
        """The ternary head is one matrix shared by every layer."""
        return self.head == "ternary"

    @property
    def simultaneous(self) -> bool:
        """Every layer learns on every batch (the streaming mode)."""
        return self.schedule == "simultaneous"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RULE_OPTIONS = frozenset(field.name for field in fields(Options))

# ``models.optim``: the options ``describe()`` returns, and the state kept per parameter.
OPTIMIZER_OPTIONS = {
    "adam": frozenset({"name", "lr", "betas", "eps", "weight_decay"}),
    "sgd": frozenset({"name", "lr", "momentum", "nesterov", "weight_decay"}),
}
STEP_SLOT = "step"  # Adam's step count (int64, one per parameter)
ADAM_MOMENTS = ("m", "v")  # Adam's first and second moments
ADAM_SLOTS = (*ADAM_MOMENTS, STEP_SLOT)
VELOCITY_SLOT = "velocity"  # SGD with momentum


def optimizer_slots(optimizer: dict[str, Any]) -> tuple[str, ...]:
    """State names per parameter (``Optimizer._new_state``) for an optimizer's ``describe()``."""
    if optimizer["name"] == "adam":
        return ADAM_SLOTS
    return (VELOCITY_SLOT,) if optimizer.get("momentum") else ()
