"""helpers: the thin library the course notebooks call.

One job per module, in pipeline order:

    course        the course settings every notebook reads (one file switches all five)
    colab         the setup cell: Colab's widgets, Drive, installs (nothing elsewhere)
    readers       JSON, YAML and images read safely: every failure one line naming the file
    validate      one rule for every input: COCO files, segmentations and RLE, results, submissions
    data          load, split and describe a Tiny VOC-layout data root
    demo_data     the synthetic data set in the same layout (the embedded default)
    config, ranges   experiment YAML in detectron2's vocabulary, overrides, engine support; value ranges
    schedule      the learning-rate schedule (warm-up and steps) from the config alone
    engines       the seam: detectron2 and torchvision behind one small interface
    experiment    one run end to end: resolve, train, predict, evaluate
    cpu_memory    on a CPU, keep freed memory for reuse (glibc mallopt) instead of page-faulting it back
    progress      the live bar and the plain progress lines (Jupyter and logs)
    runs          what a run folder holds (checkpoints, metrics log) and how to read it
    instances     the per-image predictions both engines return
    inspect_run   one image through the trained model, stage by stage (the figures: plots_stages)
    evaluate      COCO metrics (pycocotools underneath)
    submission    masks <-> RLE, the submission writer and validator
    inference_checks   the homework's inference mistakes measured: channel order, score threshold
    ablation, stats    the weight-decay ablation: seeds, intervals, verdicts, decay arithmetic
    error_analysis, confusion   where the mAP goes: TIDE error types, the class-confusion matrix
    viz           drawing: masks and labels on images, image grids, saving figures
    plots, plots_errors, plots_stages   charts: statistics, curves, AP, ablation, inference checks, errors, stages
    image_browser the interactive image browser of 05 (ipywidgets)
    concepts      small computed examples of the course's ideas (IoU, anchors, LR, RLE, AP)
    exercises, exercise_bank    exercises that check themselves (solutions/SOLUTIONS.md)
    pipeline      papermill runs of the ordered notebooks under a profile
"""

__version__ = "0.1.0"
