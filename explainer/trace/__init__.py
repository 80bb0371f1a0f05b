"""The trace: the first stage where two runs of a network diverge, and why.

==========================  ================================================================================
module                      what a reader looks for there
==========================  ================================================================================
``capture``                 stages recorded in PyTorch (forward hooks) and in ONNX Runtime
``causes``                  the causes fitted to a stage's difference (affine, shift, resize, ROIAlign, ...)
``divergence``              :func:`compare`, the :class:`TraceReport`, dumps read from files
==========================  ================================================================================

The public names of :mod:`explainer.trace.divergence` are importable from here:
``from explainer import trace; trace.compare(reference, candidate)``.
"""

from explainer.trace.divergence import *  # noqa: F401,F403  (the package's API)
from explainer.trace.divergence import __all__  # noqa: F401
