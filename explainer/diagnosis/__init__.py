"""The diagnosis: why two sets of detections for the same images differ, named from their fingerprints.

==========================  ================================================================================
module                      what a reader looks for there
==========================  ================================================================================
``detections``              result files and tensors read and checked (COCO results, masks, keypoints)
``result_masks``            COCO masks (RLE, polygons) read with pycocotools and compared
``matching``                detections paired one to one across the two sides
``causes``                  the vocabulary of causes and how one is made
``label_causes``            label shifts, permutations and COCO-id mix-ups
``field_causes``            keypoints, masks and non-finite values
``injection``               a known cause injected into detections (what the diagnosis is tested on)
``cost``                    what each found cause costs in AP (COCOeval), each undone from its fitted parameters
``report``                  :func:`diagnose` and the :class:`Diagnosis` it returns
==========================  ================================================================================

The public names of :mod:`explainer.diagnosis.report` are importable from here:
``from explainer import diagnosis as Dx; Dx.diagnose(reference, candidate)``.
"""

from explainer.diagnosis.report import *  # noqa: F401,F403  (the package's API)
from explainer.diagnosis.report import __all__  # noqa: F401
