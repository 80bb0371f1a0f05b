"""The course's miniature detector and what is built on it.

==========================  ================================================================================
module                      what a reader looks for there
==========================  ================================================================================
``pipeline``                the two-stage detector with every inference knob switchable, and its fit
``cache``                   the fitted detector kept on disk, the course's scenes and runs
``compare``                 two runs stage by stage, detections against detections, the bisection of knobs
``measured``                every difference of :mod:`explainer.effects` measured on the detector
``network``                 the detector as one ``torch.nn.Module``, exported to ONNX and traced
``real_detector``           torchvision's Mask R-CNN R50-FPN, exported, traced, and made wrong on purpose
``selfcheck``               the chapters' questions, answered live with the chapters' own functions
==========================  ================================================================================

Import the module you need (``from explainer.course import pipeline as P``); nothing is imported here, so that
reading one module does not fit the detector or import torchvision.
"""
