"""Compiled kernels, installed as ``tinynlm.kernels``: Numba on the CPU, CUDA on the GPU.

Kernels are plain functions over NumPy or CuPy arrays and know nothing of tensors; the op layer
finds them through ``tinynlm.dispatch``.
"""
