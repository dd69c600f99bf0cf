"""Loading, running and benchmarking compiled .pte programs: the Python runtime, the C++ runner's build and
benchmark over adb or on this machine, ExecuTorch op profiles, output metrics.

Owns everything that happens after a .pte exists. Imports: ExecuTorch's runtime and `vggt_et.utils` only,
never the compiler (pipeline, passes, quantizers) or the model: a deployment needs none of them.
"""
