"""Peak tensor memory of a call, measured from torch's CPU allocator events.

``peak_tensor_bytes(fn)`` runs ``fn`` under ``torch.profiler`` with memory profiling and replays
every allocation (+bytes) and free (−bytes) the allocator reported, in time order; the peak of
that running sum is the most tensor memory allocated during the call that was alive at once.
Tensors that existed before the call (weights, optimizer moments) are not counted, so for a
learning step this is the step's working memory: activations, deltas, gradients, temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch.profiler import ProfilerActivity, profile

T = TypeVar("T")


def peak_tensor_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # kineto_results is the profiler's raw event list; "[memory]" events carry signed byte counts.
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return result, peak
