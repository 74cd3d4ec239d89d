"""Drivers: the loop around the kernels.

``python_loop`` calls any Python F and dF and launches one fused kernel per
step; ``compiled`` runs the whole loop in nopython mode when F and dF are
Numba-jitted.  Both share ``problem.Outcome`` and scipy's status codes.
"""
