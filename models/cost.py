"""Operation counts for one step, accumulated while the step runs.

``macs`` counts multiply-accumulates of the matrix products a rule performs (forward, feedback,
weight-gradient outer products, fixed heads); element-wise work is not counted. For a masked layer
only the connections that exist (nonzeros of the mask) are counted, which is what sparse hardware
would execute. ``bytes_touched`` sums the sizes of the tensors a step reads or writes (weights,
activations, deltas, gradients, optimizer moments), counted once per use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Cost:
    macs: int = 0
    bytes_touched: int = 0

    def add_macs(self, count: int) -> None:
        self.macs += int(count)

    def touch(self, *tensors: torch.Tensor) -> None:
        for tensor in tensors:
            self.bytes_touched += tensor.numel() * tensor.element_size()
