"""Drivers: the loop around the kernels.

``python_loop`` calls any Python F and dF and launches one fused kernel per
step; ``compiled`` runs the whole loop in nopython mode when F and dF are
Numba-jitted.  Both call the user through ``problem.Problem`` (with ``batches.Batches`` for mini-batches
and ``callback``) and end with an ``outcome.Outcome`` in scipy's status vocabulary.
"""
