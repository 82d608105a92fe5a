"""Bio-FO's inference pass and whole update step as ONNX graphs that plain onnxruntime runs.

A Bio-FO update needs no backward pass through the network, so one labelled batch becomes one
ordinary graph: inputs are the current weights, the optimizer state, the batch, the labels and the
learning rate; outputs are the new weights and state, the loss of every layer and the class
probabilities before the update. Nothing here imports torch: the graphs are built with
``onnx.helper`` from the learner's spec (``Learner.spec``, which every checkpoint carries), so the
device builds them at load time from any checkpoint, whichever engine wrote it. What Bio-FO is
(options and defaults, which head each layer reads, state keys, optimizer slots) comes from
``models.biofo_spec``, which the torch rule reads too; the nodes are written with
``models.onnx_graph``, as ``models.export`` writes its graphs.

The nodes spell out, op for op, what the torch code computes (simultaneous schedule, batch mean):

- forward (``Dense.forward``, ``relu``): ``z_k = h_{k-1} (S_k ⊙ W_k)ᵀ + b_k``,
  ``h_k = max(z_k, 0)``;
- local error (``BioFO.updates``, ``softmax_error``): ``a_k = h_k B_kᵀ``,
  ``L_k = −mean log_softmax(a_k)[y]``, ``δa_k = (exp(log_softmax(a_k)) − onehot(y)) / batch``,
  ``δz_k = (δa_k B_k) ⊙ 1[z_k > 0]``;
- gradients (``Dense.grads``): ``∇W_k = S_k ⊙ (δz_kᵀ h_{k-1})``, ``∇b_k = Σ_batch δz_k``;
- the optimizer (``Adam._update`` / ``SGD._update``; Adam in Kingma & Ba's equivalent form with
  the bias corrections folded into two scalars, see ``_adam_scalars``).

Every layer's update uses the weights from before the step (in the torch rule layer k+1 runs
forward on layer k's output computed before layer k's update is applied), so computing them all
in one graph is the same step. Graph inputs and outputs carry the learner's state-dict names;
``next/<name>`` is the value of ``<name>`` after the step.

Only what the daemon runs is supported: dense ReLU layers (masks allowed), Bio-FO in the
simultaneous schedule without early exit, Gaussian or ternary heads, Adam or SGD, float32.
``plan_for`` refuses anything else with the reason. It also refuses every rule option the graphs
do not depend on (``GRAPH_OPTIONS``) unless it has its default, and optimizer options it does not
know, so an option added to ``models.biofo_spec.Options`` or the optimizers cannot be silently
ignored here.

Why built from the spec and not traced from the torch rule: a traced graph needs torch where it
is made, so it would have to travel inside or beside every checkpoint, and a checkpoint written
by the torch engine (or a base model trained before) would not carry it. The spec and the state
arrays are all a checkpoint has, and all this needs. What keeps the two computations together is
checked, not assumed: the optimizer option sets are compared with ``models.optim``'s, and 1000
consecutive real updates must end within 1e-4 of torch (tests/test_engine_onnxruntime.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from models.biofo_spec import (
    ADAM_MOMENTS,
    DEFAULTS,
    NAME,
    OPTIMIZER_OPTIONS,
    RULE_OPTIONS,
    STEP_SLOT,
    STEPS,
    VELOCITY_SLOT,
    Options,
    head_key,
    head_macs_per_sample,
    optimizer_slots,
    own_head,
)
from models.onnx_graph import Graph, value_info

FEATURES = "x"
LABELS = "y"
LEARNING_RATE = "lr"
PROBABILITIES = "probabilities"
LOSSES = "loss_per_layer"
NEXT = "next/"
ACTIVATION = "relu"  # the one activation the graphs compute (ReLU's derivative: 1[z > 0])
# The rule options the graphs handle (the head kind; the scale only shaped the stored heads, and
# the greedy step count means nothing in the simultaneous schedule); every other must keep its
# default, which is the simultaneous schedule's full pass.
GRAPH_OPTIONS = ("head", "head_scale", "greedy_steps")
# The learner's state names: its network's arrays, the rule's and the optimizer's, prefixed.
READOUT_WEIGHT = "network.readout.weight"
RULE_STEPS = f"rule.{STEPS}"


class UnsupportedSpec(ValueError):
    """The spec asks for something the onnxruntime engine does not run."""


@dataclass(frozen=True)
class Plan:
    """Everything the graphs depend on; the weights themselves are inputs."""

    input_dim: int
    widths: tuple[int, ...]  # hidden layer widths
    num_classes: int
    masked: tuple[bool, ...]  # per hidden layer
    shared_head: bool  # ternary: one head, the read-out's, for every layer
    optimizer: str
    # Optimizer options other than the learning rate (a graph input), as (name, value) pairs.
    hyper: tuple[tuple[str, Any], ...]

    @property
    def depth(self) -> int:
        return len(self.widths)

    def layer_shape(self, index: int) -> tuple[int, int]:
        fan_in = self.input_dim if index == 0 else self.widths[index - 1]
        return self.widths[index], fan_in

    def head_name(self, index: int) -> str:
        """The fixed head ``B`` of hidden layer ``index`` (``BioFO.head``)."""
        if own_head(index, self.depth, self.shared_head):
            return f"rule.{head_key(index)}"
        return READOUT_WEIGHT

    def trainable(self) -> dict[str, tuple[int, ...]]:
        """Optimizer parameter names (``Network.parameters``) and their shapes."""
        params: dict[str, tuple[int, ...]] = {}
        for index in range(self.depth):
            params[f"layers.{index}.weight"] = self.layer_shape(index)
            params[f"layers.{index}.bias"] = (self.widths[index],)
        return params

    def slots(self) -> tuple[str, ...]:
        """Optimizer state kept per parameter."""
        return optimizer_slots({"name": self.optimizer, **dict(self.hyper)})

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every array of ``Learner.state_dict()`` a graph reads, by name, with shape and dtype."""
        f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
        shapes = {
            "network.input_mean": ((self.input_dim,), f32),
            "network.input_std": ((self.input_dim,), f32),
            READOUT_WEIGHT: ((self.num_classes, self.widths[-1]), f32),
            "network.readout.bias": ((self.num_classes,), f32),
            RULE_STEPS: ((), i64),
        }
        for index in range(self.depth):
            shape = self.layer_shape(index)
            shapes[f"network.layers.{index}.weight"] = (shape, f32)
            shapes[f"network.layers.{index}.bias"] = ((shape[0],), f32)
            if self.masked[index]:
                shapes[f"network.layers.{index}.mask"] = (shape, f32)
            head = self.head_name(index)
            if head != READOUT_WEIGHT:
                shapes[head] = ((self.num_classes, shape[0]), f32)
        for name, shape in self.trainable().items():
            for slot in self.slots():
                slot_shape, dtype = ((), i64) if slot == STEP_SLOT else (shape, f32)
                shapes[f"optimizer.{name}.{slot}"] = (slot_shape, dtype)
        return shapes

    def macs_per_sample(self, nonzeros: list[int]) -> int:
        """Multiply-accumulates of one update per sample, counted as ``models.cost`` does:
        forward and weight gradient per connection (``nonzeros[k]``) and the head's two products."""
        return sum(
            2 * nz + head_macs_per_sample(self.num_classes, n)
            for nz, n in zip(nonzeros, self.widths)
        )


def plan_for(spec: dict[str, Any]) -> Plan:
    """The graphs' plan for a learner spec (``Learner.spec``), or ``UnsupportedSpec`` saying why."""
    problems: list[str] = []
    if spec.get("rule") != NAME:
        problems.append(f"rule {spec.get('rule')!r} (only {NAME!r})")
    given = spec.get("rule_options", {})
    unknown = set(given) - RULE_OPTIONS
    if unknown:
        problems.append(f"unknown biofo options {sorted(unknown)}")
    try:
        options = Options(**{key: value for key, value in given.items() if key in RULE_OPTIONS})
    except ValueError as error:
        problems.append(str(error))
        options = Options()
    runnable = Options(**{name: getattr(options, name) for name in GRAPH_OPTIONS})
    for field in fields(Options):
        value, only = getattr(options, field.name), getattr(runnable, field.name)
        if value != only:
            problems.append(f"{field.name} {value!r} (only {only!r})")
    if spec.get("dtype", "float32") != "float32":
        problems.append(f"dtype {spec.get('dtype')!r} (only 'float32')")
    widths, masked = [], []
    for index, layer in enumerate(spec.get("layers", [])):
        if layer.get("type") != "dense":
            problems.append(f"layer {index} of type {layer.get('type')!r} (only 'dense')")
        activation = layer.get("activation", spec.get("activation", DEFAULTS["activation"]))
        if activation != ACTIVATION:
            problems.append(f"layer {index} activation {activation!r} (only {ACTIVATION!r})")
        widths.append(int(layer.get("units", 0)))
        masked.append(layer.get("mask") is not None)
    if not widths:
        problems.append("no hidden layer list ('layers')")
    optimizer = dict(spec.get("optimizer", {}))
    name = optimizer.get("name")
    if name not in OPTIMIZER_OPTIONS:
        problems.append(f"optimizer {name!r} (only {' or '.join(map(repr, OPTIMIZER_OPTIONS))})")
    elif set(optimizer) != OPTIMIZER_OPTIONS[name]:
        expected = sorted(OPTIMIZER_OPTIONS[name])
        problems.append(f"{name} options {sorted(optimizer)}; expected {expected}")
    if problems:
        raise UnsupportedSpec(
            "the onnxruntime engine cannot run this model: " + "; ".join(problems)
        )
    hyper = tuple(
        (key, tuple(value) if isinstance(value, list) else value)
        for key, value in sorted(optimizer.items()) if key not in ("name", "lr")
    )
    return Plan(
        input_dim=int(spec["input_dim"]), widths=tuple(widths), num_classes=len(spec["classes"]),
        masked=tuple(masked), shared_head=options.shared_head, optimizer=name, hyper=hyper,
    )


def _hidden(g: Graph, plan: Plan, index: int, h: str) -> tuple[str, str]:
    """``(z, relu(z))`` of hidden layer ``index``."""
    weight = f"network.layers.{index}.weight"
    if plan.masked[index]:
        weight = g.op("Mul", weight, f"network.layers.{index}.mask")
    z = g.dense(h, weight, f"network.layers.{index}.bias")
    return z, g.activation(ACTIVATION, z)


def _standardise(g: Graph) -> str:
    return g.standardise(FEATURES, "network.input_mean", "network.input_std")


def _inference_nodes(g: Graph, plan: Plan) -> None:
    h = _standardise(g)
    for index in range(plan.depth):
        h = _hidden(g, plan, index, h)[1]
    g.softmax(g.dense(h, READOUT_WEIGHT, "network.readout.bias"), out=PROBABILITIES)


def _adam_scalars(g: Graph, plan: Plan) -> tuple[str, str]:
    """Advance Adam's step count; return ``α_t = lr·√(1−β2ᵗ)/(1−β1ᵗ)`` and ``ε̂ = ε·√(1−β2ᵗ)``.

    ``p − α_t·m / (√v + ε̂)`` is ``Adam._update``'s ``p − lr·m̂ / (√v̂ + ε)`` with numerator and
    denominator multiplied by ``√(1 − β2ᵗ)`` (Kingma & Ba's own efficient form): two scalars
    instead of two passes over the weights, and the same value up to float rounding.
    ``Adam`` keeps one step count per parameter, but a Bio-FO step moves every parameter, so the
    counts are equal (``OrtLearner`` refuses a state where they differ) and one serves them all.
    """
    hyper = dict(plan.hyper)
    beta1, beta2 = (float(beta) for beta in hyper["betas"])
    names = [f"optimizer.{name}.{STEP_SLOT}" for name in plan.trainable()]
    step = g.op("Add", names[0], g.constant(1), out=f"{NEXT}{names[0]}")
    for name in names[1:]:
        g.op("Identity", step, out=f"{NEXT}{name}")
    # In double, as Python computes ``1 − β^t`` before torch rounds it to the tensor's float32.
    t = g.op("Cast", step, to=TensorProto.DOUBLE)
    one = g.constant(1.0, dtype=np.float64)
    first, second = (
        g.op("Sub", one, g.op("Pow", g.constant(beta, dtype=np.float64), t))
        for beta in (beta1, beta2)
    )
    root = g.op("Sqrt", second)
    lr = g.op("Cast", LEARNING_RATE, to=TensorProto.DOUBLE)
    step_size = g.op("Div", g.op("Mul", lr, root), first)
    eps = g.op("Mul", g.constant(float(hyper["eps"]), dtype=np.float64), root)
    return (g.op("Cast", step_size, to=TensorProto.FLOAT), g.op("Cast", eps, to=TensorProto.FLOAT))


def _optimizer_step(
    g: Graph,
    plan: Plan,
    name: str,
    grad: str | tuple[str, str],
    adam: tuple[str, str] | None,
    rank_one: bool = False,
) -> None:
    """One optimizer step of parameter ``name``, as ``Adam._update`` / ``SGD._update``.

    ``grad`` is the gradient, or ``(δz, h)`` when it is the plain product ``δzᵀ h`` (an unmasked
    weight). For Adam without weight decay at batch one (``rank_one``), where
    ``(δzᵀh)² = (δz²)ᵀ(h²)``, each new moment is then one ``Gemm``: the product, its factor
    ``1 − β`` and the decayed old moment (Gemm's ``C``) in one pass. Six elementwise passes over
    the weight fewer, and each pass over a 256 × 256 weight costs more than all the batch-1
    products together.
    """
    hyper = dict(plan.hyper)
    param, state = f"network.{name}", f"optimizer.{name}"
    fused = isinstance(grad, tuple) and adam is not None and rank_one and not hyper["weight_decay"]
    factors = grad if fused else None
    if isinstance(grad, tuple) and not fused:
        grad = g.op("Gemm", *grad, transA=1)
    if hyper["weight_decay"]:
        decay = g.constant(float(hyper["weight_decay"]))
        grad = g.op("Add", grad, g.op("Mul", decay, param))
    if adam is not None:
        beta1, beta2 = (float(beta) for beta in hyper["betas"])
        m_name, v_name = (f"{state}.{slot}" for slot in ADAM_MOMENTS)
        step_size, eps = adam
        if factors is not None:
            # Gemm's C term: β·moment + (1 − β)·product in the product's own pass.
            squares = [g.op("Mul", factor, factor) for factor in factors]
            m = g.op("Gemm", *factors, m_name, transA=1, alpha=1.0 - beta1, beta=beta1,
                     out=f"{NEXT}{m_name}")
            v = g.op("Gemm", *squares, v_name, transA=1, alpha=1.0 - beta2, beta=beta2,
                     out=f"{NEXT}{v_name}")
        else:
            m = g.op("Add", g.op("Mul", m_name, g.constant(beta1)),
                     g.op("Mul", grad, g.constant(1.0 - beta1)), out=f"{NEXT}{m_name}")
            v = g.op("Add", g.op("Mul", v_name, g.constant(beta2)),
                     g.op("Mul", g.op("Mul", grad, grad), g.constant(1.0 - beta2)),
                     out=f"{NEXT}{v_name}")
        delta = g.op("Div", g.op("Mul", m, step_size), g.op("Add", g.op("Sqrt", v), eps))
    else:
        momentum = float(hyper["momentum"])
        if momentum:
            velocity_name = f"{state}.{VELOCITY_SLOT}"
            velocity = g.op("Add", g.op("Mul", velocity_name, g.constant(momentum)), grad,
                            out=f"{NEXT}{velocity_name}")
            if hyper["nesterov"]:
                grad = g.op("Add", grad, g.op("Mul", g.constant(momentum), velocity))
            else:
                grad = velocity
        delta = g.op("Mul", LEARNING_RATE, grad)
    g.op("Sub", param, delta, out=f"{NEXT}{param}")


def _update_nodes(g: Graph, plan: Plan, rank_one: bool) -> list[str]:
    """The nodes of one step (``rank_one``: of a batch of one); returns the names of the state
    arrays the step replaces."""
    batch = g.op("Cast", g.op("Gather", g.op("Shape", FEATURES), g.constant(0), axis=0),
                 to=TensorProto.FLOAT)
    depth, values = g.constant(plan.num_classes), g.constant([0.0, 1.0])
    onehot = g.op("OneHot", LABELS, depth, values, axis=-1)
    adam = _adam_scalars(g, plan) if plan.optimizer == "adam" else None
    losses, log_p = [], ""
    h = _standardise(g)
    for index in range(plan.depth):
        z, h_next = _hidden(g, plan, index, h)
        head = plan.head_name(index)
        log_p = g.op("LogSoftmax", g.dense(h_next, head), axis=1)
        picked = g.op("ReduceSum", g.op("Mul", log_p, onehot), keepdims=0)
        loss = g.op("Neg", g.op("Div", picked, batch))
        losses.append(g.op("Unsqueeze", loss, g.constant([0])))
        error = g.op("Div", g.op("Sub", g.op("Exp", log_p), onehot), batch)
        active = g.op("Cast", g.op("Greater", z, g.constant(0.0)), to=TensorProto.FLOAT)
        dz = g.op("Mul", g.op("MatMul", error, head), active)
        grad_w: str | tuple[str, str] = (dz, h)
        if plan.masked[index]:
            grad_w = g.op("Mul", g.op("Gemm", dz, h, transA=1), f"network.layers.{index}.mask")
        grad_b = g.op("ReduceSum", dz, g.constant([0]), keepdims=0)
        _optimizer_step(g, plan, f"layers.{index}.weight", grad_w, adam, rank_one)
        _optimizer_step(g, plan, f"layers.{index}.bias", grad_b, adam, rank_one)
        h = h_next
    g.op("Concat", *losses, axis=0, out=LOSSES)
    # The last layer's head is the read-out (bias 0, frozen): the prediction before the step.
    g.op("Exp", log_p, out=PROBABILITIES)
    g.op("Add", RULE_STEPS, g.constant(1), out=f"{NEXT}{RULE_STEPS}")
    replaced = [f"network.{name}" for name in plan.trainable()]
    replaced += [f"optimizer.{name}.{slot}" for name in plan.trainable() for slot in plan.slots()]
    return [*replaced, RULE_STEPS]


def _read(g: Graph, plan: Plan) -> list[str]:
    """State names the graph's nodes read, in ``state_shapes`` order."""
    used = {name for node in g.nodes for name in node.input}
    return [name for name in plan.state_shapes() if name in used]


def inference_model(plan: Plan, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``x`` (batch, D) raw features -> ``probabilities`` (batch, C).

    The state arrays are graph inputs, or, given ``weights``, initializers holding them (a
    self-contained model for export)."""
    g = Graph()
    _inference_nodes(g, plan)
    shapes = plan.state_shapes()
    state = _read(g, plan)
    inputs = [value_info(FEATURES, ("batch", plan.input_dim), np.float32)]
    if weights is None:
        inputs += [value_info(name, *shapes[name]) for name in state]
    else:
        for name in state:
            g.constant(weights[name], name, dtype=shapes[name][1])
    outputs = [value_info(PROBABILITIES, ("batch", plan.num_classes), np.float32)]
    return g.model(inputs, outputs, "biofo_inference", full_check=False)


def update_model(plan: Plan, single: bool = False) -> onnx.ModelProto:
    """One Bio-FO update: ``x``, ``y`` (batch,) int64, ``lr`` and the state -> ``next/<state>``,
    ``loss_per_layer`` (depth,) and ``probabilities`` (batch, C) before the step.

    ``single``: for a batch of one only (the streaming update, one labelled window), which
    allows fusions that hold for rank-one gradients alone; onnxruntime refuses other batches."""
    g = Graph()
    replaced = _update_nodes(g, plan, single)
    shapes = plan.state_shapes()
    batch = 1 if single else "batch"
    inputs = [
        value_info(FEATURES, (batch, plan.input_dim), np.float32),
        value_info(LABELS, (batch,), np.int64),
        value_info(LEARNING_RATE, (), np.float32),
        *(value_info(name, *shapes[name]) for name in _read(g, plan)),
    ]
    outputs = [
        *(value_info(f"{NEXT}{name}", *shapes[name]) for name in replaced),
        value_info(LOSSES, (plan.depth,), np.float32),
        value_info(PROBABILITIES, (batch, plan.num_classes), np.float32),
    ]
    return g.model(inputs, outputs, "biofo_update", full_check=False)
