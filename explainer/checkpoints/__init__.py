"""Checkpoints: read Detectron, maskrcnn-benchmark, torchvision and Detectron2 weights without running their code, convert
them to Detectron2's names and layouts, and audit them against what a model expects.

==========================  ================================================================================
module                      what a reader looks for there
==========================  ================================================================================
``safe_load``               the restricted unpickler and the bounds every file is read within
``checkpoint``              :func:`load_checkpoint`, :func:`audit` and the report of a checkpoint
``conversion``              Detectron blob names and layouts to Detectron2's (class rows, anchor rows)
``maskrcnn_benchmark``      maskrcnn-benchmark state dicts to Detectron2's
``torchvision_detection``   torchvision's detection models' state dicts to Detectron2's, and back
==========================  ================================================================================

The public names of :mod:`explainer.checkpoints.checkpoint` are importable from here:
``from explainer import checkpoints as Ck; Ck.load_checkpoint(path)``.
"""

from explainer.checkpoints.checkpoint import *  # noqa: F401,F403  (the package's API)
from explainer.checkpoints.checkpoint import __all__  # noqa: F401
