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
library's ``fegetenv``/``fesetenv``, once per thread; a thread started later inherits them from the
thread that starts it. onnxruntime's own
``session.set_denormal_as_zero`` sets them only on its pool threads, and a single-threaded session
runs on the caller's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading

# Offset of the control register in glibc's ``fenv_t`` and the bits that flush subnormals.
_CONTROL = {
    "x86_64": (28, (1 << 15) | (1 << 6)),  # MXCSR: flush to zero, denormals are zero
    "aarch64": (0, 1 << 24),  # FPCR: FZ
}
_FENV_BYTES = 64  # larger than glibc's fenv_t on both (32 and 8 bytes)

_done = threading.local()


def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


def flush_on_this_thread() -> bool:
    """Set flush-to-zero on the calling thread (once); False where the platform is not known."""
    applied = getattr(_done, "applied", None)
    if applied is not None:
        return applied
    _done.applied = flush_subnormals(True)
    return _done.applied


def flush_subnormals(enabled: bool) -> bool:
    """Turn flushing on or off on the calling thread (off: IEEE subnormals, the processor's default)."""
    control = _CONTROL.get(platform.machine())
    libm = _libm()
    if control is None or libm is None:
        return False
    offset, bits = control
    env = ctypes.create_string_buffer(_FENV_BYTES)
    if libm.fegetenv(env) != 0:
        return False
    register = ctypes.c_uint32.from_buffer(env, offset)
    register.value = register.value | bits if enabled else register.value & ~bits
    return libm.fesetenv(env) == 0
