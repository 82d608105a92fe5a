"""Subnormal floats flushed to zero on the thread that runs updates.

Adam's first moment of a weight whose unit stays silent decays by β1 = 0.9 at every update, so
after about 800 updates it falls below float32's smallest normal number (1.18e-38). x86 and ARM
cores handle subnormal operands in microcode, tens of times slower than normal ones: on the
bundled ECG base, after 1 200 updates on record 208 a sixth of the second layer's moments were
subnormal and a batch-1 onnxruntime update took 0.71 ms instead of 0.40, and it kept slowing down
as a patient's labels (each with its rehearsal updates) piled up. Flushed to zero, such a moment
changes nothing that matters: its share of a weight's step is about 1e-33, far below the weight's
float32 resolution.

The flush-to-zero and denormals-are-zero bits live in each thread's floating-point control
register (x86-64 MXCSR, AArch64 FPCR), so they are set from the thread itself, through the C
library's ``fegetenv``/``fesetenv``; a thread started later inherits them from the thread that
starts it. They are set only for the duration of an update (``subnormals_flushed``) and restored
after: they change every float operation on the thread, Python's own included (with them on,
``5e-324 == 0.0``), and the same thread goes on to check requests whose fields may be subnormal.
onnxruntime's own ``session.set_denormal_as_zero`` sets them only on its pool threads, and a
single-threaded session runs on the caller's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# Offset of the control register in glibc's ``fenv_t`` and the bits that flush subnormals.
_CONTROL = {
    "x86_64": (28, (1 << 15) | (1 << 6)),  # MXCSR: flush to zero, denormals are zero
    "aarch64": (0, 1 << 24),  # FPCR: FZ
}
_FENV_BYTES = 64  # larger than glibc's fenv_t on both (32 and 8 bytes)


@functools.cache
def _platform() -> tuple[ctypes.CDLL, int, int] | None:
    """libm, and the offset and bits of this processor's flush control; None where not known."""
    control = _CONTROL.get(platform.machine())
    name = ctypes.util.find_library("m")
    if control is None or name is None:
        return None
    return ctypes.CDLL(name), *control


def _environment() -> ctypes.Array[ctypes.c_char] | None:
    """The calling thread's floating-point environment, or None where flushing is not known."""
    here = _platform()
    if here is None:
        return None
    env = ctypes.create_string_buffer(_FENV_BYTES)
    return env if here[0].fegetenv(env) == 0 else None


def _set(env: ctypes.Array[ctypes.c_char], flush: bool) -> bool:
    """Make ``env`` (from ``_environment``) the calling thread's, with flushing on or off."""
    libm, offset, bits = _platform()
    changed = ctypes.create_string_buffer(env.raw, _FENV_BYTES)
    register = ctypes.c_uint32.from_buffer(changed, offset)
    register.value = register.value | bits if flush else register.value & ~bits
    return libm.fesetenv(changed) == 0


def flush_subnormals(enabled: bool) -> bool:
    """Turn flushing on or off on the calling thread (off: IEEE subnormals, the processor's default)."""
    env = _environment()
    return env is not None and _set(env, enabled)


@contextmanager
def subnormals_flushed() -> Iterator[bool]:
    """Flush subnormals on the calling thread inside the block and restore its environment after;
    yields False where the platform is not known (the block then runs with IEEE subnormals)."""
    saved = _environment()
    if saved is None or not _set(saved, True):
        yield False
        return
    try:
        yield True
    finally:
        _platform()[0].fesetenv(saved)
