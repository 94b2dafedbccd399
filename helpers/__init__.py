"""helpers: the thin library the course notebooks call.

One job per module, in pipeline order:

    readers      JSON, YAML and images read safely: every failure one line naming the file
    validate     one rule for every input: COCO files, segmentations and RLE, results, submissions
    data         load, split and describe a Tiny VOC-layout data root
    demo_data    the synthetic data set in the same layout (the embedded default)
    config       experiment YAML in detectron2's vocabulary, overrides, engine support
    engines      the seam: detectron2 and torchvision behind one small interface
    runs         what a run folder holds (checkpoints, metrics log) and how to read it
    instances    the per-image predictions both engines return
    evaluate     COCO metrics (pycocotools underneath)
    submission   masks <-> RLE, the submission writer and validator
    viz          figures and the interactive browser
    pipeline     papermill runs of the ordered notebooks under a profile
"""

__version__ = "0.1.0"
