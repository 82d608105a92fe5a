"""ONNX graphs written node by node with ``onnx.helper``, without torch.

The one toolkit behind every graph biofo writes: ``models.export`` (the inference of any learner,
weights baked in) and ``models.biofo_onnx`` (Bio-FO's inference and update step, weights as
inputs, run by the onnxruntime engine where torch is not installed). Opset 13 and IR version 7
keep the files loadable by the older onnxruntime builds found on Jetson boards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import json

import numpy as np
import onnx
from numpy.typing import ArrayLike, DTypeLike
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7
FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))
ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu"}


def value_info(name: str, shape: Sequence[Any], dtype: DTypeLike) -> onnx.ValueInfoProto:
    """A graph input or output: ``shape`` holds sizes or names of dynamic axes (``"batch"``)."""
    element_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, element_type, list(shape))


def set_metadata(model: onnx.ModelProto, classes: Sequence[str], rule: str, version: int) -> None:
    """What an exported model records: its class names (JSON), rule and version."""
    helper.set_model_props(model, {
        "classes": json.dumps(list(classes)),
        "rule": rule,
        "version": str(version),
    })


class Graph:
    """Nodes and initialisers of one ONNX graph, with unique value names.

    ``dtype`` is the float type of the computation: float constants are stored in it, integer
    ones (shapes, axes, counts) as int64.
    """

    def __init__(self, dtype: DTypeLike = np.float32) -> None:
        if np.dtype(dtype) not in FLOAT_TYPES:
            known = [str(t) for t in FLOAT_TYPES]
            raise ValueError(f"cannot export dtype {dtype}; known: {known}")
        self.dtype = np.dtype(dtype)
        self.element_type = helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: dict[str, int] = {}

    def name(self, hint: str) -> str:
        """``hint`` the first time, then ``hint_1``, ``hint_2``, …"""
        count = self._used.get(hint, 0)
        self._used[hint] = count + 1
        return hint if count == 0 else f"{hint}_{count}"

    def constant(self, value: ArrayLike, hint: str = "const", dtype: DTypeLike = None) -> str:
        """An initialiser holding ``value``, as ``dtype`` if given, else as described above."""
        array = np.asarray(value)
        if dtype is None:
            dtype = self.dtype if array.dtype.kind == "f" else np.int64
        array = np.asarray(array, dtype=dtype, order="C")
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes: Any) -> str:
        """One node; its output is named ``out`` (made unique) or after the op."""
        output = self.name(out or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def standardise(self, x: str, mean: str, std: str) -> str:
        """``(x − mean) / std`` in the graph's dtype, from a float32 input ``x``."""
        if self.element_type != TensorProto.FLOAT:
            x = self.op("Cast", x, out="x_cast", to=self.element_type)
        return self.op("Div", self.op("Sub", x, mean, out="centred"), std, out="h0")

    def dense(self, h: str, weight: str, bias: str | None = None, out: str | None = None) -> str:
        """``h Wᵀ + b`` (``weight`` is ``(out, in)`` as stored)."""
        inputs = (h, weight) if bias is None else (h, weight, bias)
        return self.op("Gemm", *inputs, out=out, transB=1)

    def activation(self, kind: str, z: str, out: str | None = None, **attributes: Any) -> str:
        """``f(z)`` for an activation of ``models.activations`` by name (``identity``: ``z``)."""
        if kind == "identity":
            return z
        return self.op(ACTIVATION_OPS[kind], z, out=out, **attributes)

    def softmax(self, logits: str, out: str = "p") -> str:
        return self.op("Softmax", logits, out=out, axis=1)

    def model(
        self,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        name: str = "biofo",
        doc: str | None = None,
        full_check: bool = True,
    ) -> onnx.ModelProto:
        """The graph as a checked model (``full_check``: with onnx's shape inference, whose
        opset-13 rules for axis-less reductions disagree with onnxruntime's, so the update graph
        cannot take it)."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="biofo"
        )
        model.ir_version = IR_VERSION
        if doc is not None:
            model.doc_string = doc
        onnx.checker.check_model(model, full_check=full_check)
        return model
