"""ONNX export of a learner's inference: ``to_onnx(learner) -> bytes``.

The graph takes ``x`` (float32, ``(batch, input_dim)``, raw features, dynamic batch) and returns
``probabilities`` (float32, ``(batch, C)``), the same numbers as ``Learner.predict``: input
standardisation, the hidden stack (dense, masked dense, conv1d; every activation) and the rule's
prediction path:

- every rule that keeps ``Rule.predict`` (BP, FA, DFA, sDFA, SSDFA, DRTP, PEPITA, LLS and its
  variants): softmax of the network's read-out;
- Bio-FO: softmax of the last layer's fixed head (the read-out it installs); with the greedy
  schedule, of the head of the layer being trained; with early exit, every head up to the last
  is evaluated and each sample takes the first whose top probability reaches the threshold
  (same answer as the eager early exit, without its savings);
- FF: the classifier on the normalised activities of the neutral-label pass, or with
  ``prediction="goodness"`` the softmax of the summed goodness of the C label passes.

A float64 network is exported in float64 (the input is cast, the output cast back), so parity
does not depend on rounding weights. Weights are baked in as initialisers; a model exported
after more learning is a new file. The model records ``classes``, ``rule`` and ``version`` in its
metadata.

The graph is written directly with ``onnx.helper`` rather than traced with ``torch.onnx.export``:
the TorchScript exporter is deprecated since torch 2.9 and the dynamo one needs onnxscript; the
prediction paths contain data-dependent choices (early exit) that tracing would freeze. The
nodes are written with ``models.onnx_graph`` (also what the onnxruntime engine's Bio-FO graphs
use); the emitters below (``add_layer``, ``add_hidden_stack``, ``add_dense``) put a torch
network's layers into such a graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto

from models.activations import LEAKY_SLOPE
from models.layers import Conv1d, Dense
from models.learner import Learner
from models.network import Network
from models.onnx_graph import Graph, set_metadata, value_info
from models.rules.base import Rule
from models.rules.biofo import BioFO
from models.rules.ff import FF, NORM_EPS

INPUT = "x"
OUTPUT = "probabilities"
BATCH = "batch"
# The graph computes in the network's float type; tensors become constants of that type.
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def add_dense(
    graph: Graph, weight: torch.Tensor, bias: torch.Tensor | None, h: str, hint: str
) -> str:
    """``h Wᵀ + b`` with the weights as constants (``weight`` is ``(out, in)`` as stored)."""
    weight_name = graph.constant(weight, f"{hint}.weight")
    bias_name = None if bias is None else graph.constant(bias, f"{hint}.bias")
    return graph.dense(h, weight_name, bias_name, out=hint)


def add_layer(graph: Graph, network: Network, index: int, h: str) -> str:
    """Hidden layer ``index`` (0-based) with its activation; returns ``h_{index+1}``."""
    layer, hint = network.layers[index], f"layers.{index}"
    if isinstance(layer, Dense):
        z = add_dense(graph, layer.effective_weight(), layer.bias, h, f"{hint}.z")
    elif isinstance(layer, Conv1d):
        shape_in = graph.constant([0, layer.in_channels, layer.in_length], f"{hint}.shape_in")
        signal = graph.op("Reshape", h, shape_in, out=f"{hint}.signal")
        weight = graph.constant(layer.weight, f"{hint}.weight")
        bias = graph.constant(layer.bias, f"{hint}.bias")
        maps = graph.op(
            "Conv", signal, weight, bias, out=f"{hint}.maps",
            strides=[layer.stride], pads=[layer.padding, layer.padding],
        )
        shape_out = graph.constant([0, layer.out_features], f"{hint}.shape_out")
        z = graph.op("Reshape", maps, shape_out, out=f"{hint}.z")
    else:
        raise NotImplementedError(f"no ONNX export for layer kind {layer.kind!r}")
    name = network.activations[index].name
    attrs = {"alpha": LEAKY_SLOPE} if name == "leaky_relu" else {}
    return graph.activation(name, z, out=f"{hint}.h", **attrs)


def add_hidden_stack(
    graph: Graph, network: Network, h0: str, depth: int | None = None
) -> list[str]:
    """``[h_1, …, h_depth]`` (all hidden layers by default)."""
    hs, h = [], h0
    for index in range(network.depth if depth is None else depth):
        h = add_layer(graph, network, index, h)
        hs.append(h)
    return hs


def _readout(graph: Graph, network: Network, h0: str) -> str:
    h_last = (add_hidden_stack(graph, network, h0) or [h0])[-1]
    logits = add_dense(graph, network.readout.weight, network.readout.bias, h_last, "logits")
    return graph.softmax(logits)


def _biofo(graph: Graph, network: Network, rule: BioFO, h0: str) -> str:
    if rule.predicts_from_readout(network):
        return _readout(graph, network, h0)
    last, early_exit = rule.active_layer(network), rule.config.early_exit
    hs = add_hidden_stack(graph, network, h0, last + 1)
    probabilities = []
    for k in range(last + 1):
        logits = add_dense(graph, rule.head(network, k), None, hs[k], f"head.{k}")
        probabilities.append(graph.softmax(logits, f"p.{k}"))
    answer = probabilities[-1]
    if early_exit is None:
        return answer
    threshold = graph.constant(torch.tensor([early_exit]), "early_exit")
    # From the deepest head up, so the shallowest confident head wins.
    for k in reversed(range(last)):
        top = graph.op("ReduceMax", probabilities[k], out=f"top.{k}", axes=[1], keepdims=1)
        confident = graph.op("GreaterOrEqual", top, threshold, out=f"exit.{k}")
        answer = graph.op("Where", confident, probabilities[k], answer, out=f"answer.{k}")
    return answer


def _length_normalise(graph: Graph, h: str, hint: str) -> str:
    square = graph.op("Mul", h, h, out=f"{hint}.square")
    mean = graph.op("ReduceMean", square, out=f"{hint}.mean_square", axes=[1], keepdims=1)
    root = graph.op("Sqrt", mean, out=f"{hint}.rms")
    eps = graph.constant(torch.tensor([NORM_EPS]), "norm_eps")
    scale = graph.op("Add", root, eps, out=f"{hint}.scale")
    return graph.op("Div", h, scale, out=f"{hint}.normalised")


def _label_shape(graph: Graph, h0: str, classes: int) -> str:
    """``(batch, C)`` as a shape tensor."""
    shape = graph.op("Shape", h0, out="input_shape")
    batch = graph.op("Slice", shape, graph.constant([0], "zero"), graph.constant([1], "one"))
    return graph.op("Concat", batch, graph.constant([classes], "classes"), out="label_shape",
                    axis=0)


def _with_label(graph: Graph, h0: str, shape: str, label: torch.Tensor, hint: str) -> str:
    """``[h0, label]`` with the same ``(C,)`` label row for every sample."""
    labels = graph.op("Expand", graph.constant(label[None], hint), shape, out=f"{hint}.rows")
    return graph.op("Concat", h0, labels, out=f"{hint}.input", axis=1)


def _ff(graph: Graph, network: Network, rule: FF, h0: str) -> str:
    classes, dtype = network.num_classes, network.dtype
    shape = _label_shape(graph, h0, classes)
    if rule.prediction == "readout":
        neutral = torch.full((classes,), 1.0 / classes, dtype=dtype)
        x = _length_normalise(graph, _with_label(graph, h0, shape, neutral, "neutral"), "x0")
        features = []
        for index in range(network.depth):
            x = _length_normalise(graph, add_layer(graph, network, index, x), f"x{index + 1}")
            if rule.feeds_classifier(index):
                features.append(x)
        activity = features[0]
        if len(features) > 1:
            activity = graph.op("Concat", *features, out="activity", axis=1)
        return graph.softmax(add_dense(graph, rule.classifier, None, activity, "logits"))
    eye = torch.eye(classes, dtype=dtype)
    passes = [_with_label(graph, h0, shape, eye[c], f"label.{c}") for c in range(classes)]
    x = _length_normalise(graph, graph.op("Concat", *passes, out="label_passes", axis=0), "x0")
    score = None
    axes = graph.constant([1], "feature_axis")
    for index in range(network.depth):
        h = add_layer(graph, network, index, x)
        if rule.feeds_classifier(index):
            square = graph.op("Mul", h, h, out=f"layers.{index}.square")
            goodness = graph.op("ReduceSum", square, axes, out=f"goodness.{index}", keepdims=0)
            score = goodness if score is None else graph.op("Add", score, goodness, out="score")
        x = _length_normalise(graph, h, f"x{index + 1}")
    label_major = graph.constant([classes, -1], "label_major")
    per_label = graph.op("Reshape", score, label_major, out="per_label")
    return graph.softmax(graph.op("Transpose", per_label, out="scores", perm=[1, 0]))


def _prediction(graph: Graph, network: Network, rule: Rule, h0: str) -> str:
    if isinstance(rule, BioFO):
        return _biofo(graph, network, rule, h0)
    if isinstance(rule, FF):
        return _ff(graph, network, rule, h0)
    if type(rule).predict is Rule.predict:
        return _readout(graph, network, h0)
    raise NotImplementedError(f"no ONNX export for the prediction of rule {rule.name!r}")


def build(learner: Learner) -> onnx.ModelProto:
    """The inference graph as an ``onnx.ModelProto`` (checked)."""
    network = learner.network
    if network.dtype not in NUMPY_DTYPES:
        known = sorted(map(str, NUMPY_DTYPES))
        raise ValueError(f"cannot export dtype {network.dtype}; known: {known}")
    graph = Graph(NUMPY_DTYPES[network.dtype])
    with torch.no_grad():
        mean = graph.constant(network.input_mean, "input_mean")
        std = graph.constant(network.input_std, "input_std")
        h0 = graph.standardise(INPUT, mean, std)
        probabilities = _prediction(graph, network, learner.rule, h0)
    graph.op("Cast", probabilities, out=OUTPUT, to=TensorProto.FLOAT)
    model = graph.model(
        [value_info(INPUT, [BATCH, network.input_dim], np.float32)],
        [value_info(OUTPUT, [BATCH, network.num_classes], np.float32)],
        doc=f"biofo {learner.rule.name} model, version {learner.version}: class probabilities",
    )
    set_metadata(model, learner.classes, learner.rule.name, learner.version)
    return model


def to_onnx(learner: Learner) -> bytes:
    """Serialised ONNX inference model: input ``x`` (float32), output ``probabilities``."""
    return build(learner).SerializeToString()
