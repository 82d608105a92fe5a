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
prediction paths contain data-dependent choices (early exit) that tracing would freeze; and the
node emitters below (``Graph``, ``add_standardise``, ``add_layer``, ``add_hidden_stack``,
``add_dense``) can be reused by other graphs over the same network. Opset 13 and IR version 7
keep the file loadable by the older onnxruntime builds found on Jetson boards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from models.activations import LEAKY_SLOPE
from models.layers import Conv1d, Dense
from models.learner import Learner
from models.network import Network
from models.rules.base import Rule
from models.rules.biofo import BioFO
from models.rules.ff import FF, NORM_EPS

OPSET = 13
IR_VERSION = 7
INPUT = "x"
OUTPUT = "probabilities"
BATCH = "batch"
ELEMENT_TYPES = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE}
ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu"}


class Graph:
    """Nodes and initialisers of one ONNX graph, with unique value names.

    ``dtype`` is the float type of the computation; constants are stored in it unless they are
    integer arrays (shapes, axes).
    """

    def __init__(self, dtype: torch.dtype) -> None:
        if dtype not in ELEMENT_TYPES:
            known = sorted(map(str, ELEMENT_TYPES))
            raise ValueError(f"cannot export dtype {dtype}; known: {known}")
        self.dtype = dtype
        self.element_type = ELEMENT_TYPES[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: dict[str, int] = {}

    def name(self, hint: str) -> str:
        count = self._used.get(hint, 0)
        self._used[hint] = count + 1
        return hint if count == 0 else f"{hint}_{count}"

    def constant(self, hint: str, value: torch.Tensor | Sequence[int]) -> str:
        """A float tensor (in the graph's dtype) or a list of int64 (shapes, axes)."""
        if isinstance(value, torch.Tensor):
            array = value.detach().to(self.dtype).numpy()
        else:
            array = np.asarray(value, dtype=np.int64)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs) -> str:
        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], doc: str
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "biofo", inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="biofo"
        )
        model.ir_version = IR_VERSION
        model.doc_string = doc
        return model


def add_standardise(graph: Graph, network: Network, x: str) -> str:
    """``(x − mean) / std`` in the network's dtype, from a float32 input ``x``."""
    if graph.element_type != TensorProto.FLOAT:
        x = graph.op("Cast", [x], "x_cast", to=graph.element_type)
    centred = graph.op("Sub", [x, graph.constant("input_mean", network.input_mean)], "centred")
    return graph.op("Div", [centred, graph.constant("input_std", network.input_std)], "h0")


def add_dense(
    graph: Graph, weight: torch.Tensor, bias: torch.Tensor | None, h: str, hint: str
) -> str:
    """``h Wᵀ + b`` (``weight`` is ``(out, in)`` as stored)."""
    inputs = [h, graph.constant(f"{hint}.weight", weight)]
    if bias is not None:
        inputs.append(graph.constant(f"{hint}.bias", bias))
    return graph.op("Gemm", inputs, hint, transB=1)


def add_layer(graph: Graph, network: Network, index: int, h: str) -> str:
    """Hidden layer ``index`` (0-based) with its activation; returns ``h_{index+1}``."""
    layer, hint = network.layers[index], f"layers.{index}"
    if isinstance(layer, Dense):
        z = add_dense(graph, layer.effective_weight(), layer.bias, h, f"{hint}.z")
    elif isinstance(layer, Conv1d):
        shape_in = graph.constant(f"{hint}.shape_in", [0, layer.in_channels, layer.in_length])
        signal = graph.op("Reshape", [h, shape_in], f"{hint}.signal")
        weight = graph.constant(f"{hint}.weight", layer.weight)
        bias = graph.constant(f"{hint}.bias", layer.bias)
        maps = graph.op(
            "Conv", [signal, weight, bias], f"{hint}.maps",
            strides=[layer.stride], pads=[layer.padding, layer.padding],
        )
        shape_out = graph.constant(f"{hint}.shape_out", [0, layer.out_features])
        z = graph.op("Reshape", [maps, shape_out], f"{hint}.z")
    else:
        raise NotImplementedError(f"no ONNX export for layer kind {layer.kind!r}")
    name = network.activations[index].name
    if name == "identity":
        return z
    attrs = {"alpha": LEAKY_SLOPE} if name == "leaky_relu" else {}
    return graph.op(ACTIVATION_OPS[name], [z], f"{hint}.h", **attrs)


def add_hidden_stack(
    graph: Graph, network: Network, h0: str, depth: int | None = None
) -> list[str]:
    """``[h_1, …, h_depth]`` (all hidden layers by default)."""
    hs, h = [], h0
    for index in range(network.depth if depth is None else depth):
        h = add_layer(graph, network, index, h)
        hs.append(h)
    return hs


def add_softmax(graph: Graph, logits: str, hint: str = "p") -> str:
    return graph.op("Softmax", [logits], hint, axis=1)


def _readout(graph: Graph, network: Network, h0: str) -> str:
    h_last = (add_hidden_stack(graph, network, h0) or [h0])[-1]
    logits = add_dense(graph, network.readout.weight, network.readout.bias, h_last, "logits")
    return add_softmax(graph, logits)


def _biofo(graph: Graph, network: Network, rule: BioFO, h0: str) -> str:
    last = rule.active_layer(network)
    if rule.early_exit is None and last == network.depth - 1:
        return _readout(graph, network, h0)
    hs = add_hidden_stack(graph, network, h0, last + 1)
    probabilities = []
    for k in range(last + 1):
        logits = add_dense(graph, rule.head(network, k), None, hs[k], f"head.{k}")
        probabilities.append(add_softmax(graph, logits, f"p.{k}"))
    answer = probabilities[-1]
    if rule.early_exit is None:
        return answer
    threshold = graph.constant("early_exit", torch.tensor([rule.early_exit]))
    # From the deepest head up, so the shallowest confident head wins.
    for k in reversed(range(last)):
        top = graph.op("ReduceMax", [probabilities[k]], f"top.{k}", axes=[1], keepdims=1)
        confident = graph.op("GreaterOrEqual", [top, threshold], f"exit.{k}")
        answer = graph.op("Where", [confident, probabilities[k], answer], f"answer.{k}")
    return answer


def _length_normalise(graph: Graph, h: str, hint: str) -> str:
    square = graph.op("Mul", [h, h], f"{hint}.square")
    mean = graph.op("ReduceMean", [square], f"{hint}.mean_square", axes=[1], keepdims=1)
    root = graph.op("Sqrt", [mean], f"{hint}.rms")
    eps = graph.constant("norm_eps", torch.tensor([NORM_EPS]))
    return graph.op("Div", [h, graph.op("Add", [root, eps], f"{hint}.scale")], f"{hint}.normalised")


def _label_shape(graph: Graph, h0: str, classes: int) -> str:
    """``(batch, C)`` as a shape tensor."""
    shape = graph.op("Shape", [h0], "input_shape")
    batch = graph.op("Slice", [shape, graph.constant("zero", [0]), graph.constant("one", [1])])
    return graph.op("Concat", [batch, graph.constant("classes", [classes])], "label_shape", axis=0)


def _with_label(graph: Graph, h0: str, shape: str, label: torch.Tensor, hint: str) -> str:
    """``[h0, label]`` with the same ``(C,)`` label row for every sample."""
    labels = graph.op("Expand", [graph.constant(hint, label[None]), shape], f"{hint}.rows")
    return graph.op("Concat", [h0, labels], f"{hint}.input", axis=1)


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
            activity = graph.op("Concat", features, "activity", axis=1)
        return add_softmax(graph, add_dense(graph, rule.classifier, None, activity, "logits"))
    eye = torch.eye(classes, dtype=dtype)
    passes = [_with_label(graph, h0, shape, eye[c], f"label.{c}") for c in range(classes)]
    x = _length_normalise(graph, graph.op("Concat", passes, "label_passes", axis=0), "x0")
    score = None
    axes = graph.constant("feature_axis", [1])
    for index in range(network.depth):
        h = add_layer(graph, network, index, x)
        if rule.feeds_classifier(index):
            square = graph.op("Mul", [h, h], f"layers.{index}.square")
            goodness = graph.op("ReduceSum", [square, axes], f"goodness.{index}", keepdims=0)
            score = goodness if score is None else graph.op("Add", [score, goodness], "score")
        x = _length_normalise(graph, h, f"x{index + 1}")
    label_major = graph.constant("label_major", [classes, -1])
    per_label = graph.op("Reshape", [score, label_major], "per_label")
    return add_softmax(graph, graph.op("Transpose", [per_label], "scores", perm=[1, 0]))


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
    graph = Graph(network.dtype)
    with torch.no_grad():
        h0 = add_standardise(graph, network, INPUT)
        probabilities = _prediction(graph, network, learner.rule, h0)
    graph.op("Cast", [probabilities], OUTPUT, to=TensorProto.FLOAT)
    model = graph.model(
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH, network.input_dim])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH, network.num_classes])],
        doc=f"biofo {learner.rule.name} model, version {learner.version}: class probabilities",
    )
    helper.set_model_props(model, {
        "classes": json.dumps(list(learner.classes)),
        "rule": learner.rule.name,
        "version": str(learner.version),
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(learner: Learner) -> bytes:
    """Serialised ONNX inference model: input ``x`` (float32), output ``probabilities``."""
    return build(learner).SerializeToString()
