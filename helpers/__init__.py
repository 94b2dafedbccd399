"""helpers: the thin library the course notebooks call.

One job per module, in pipeline order:

    course        the course settings every notebook reads (one file switches all five)
    colab         the setup cell: Colab's widgets, Drive, installs (nothing elsewhere)
    data          load, validate, split and describe a Tiny VOC-layout data root
    demo_data     the synthetic data set in the same layout (the embedded default)
    config        experiment YAML in detectron2's vocabulary, overrides, engine support
    engines       the seam: detectron2 and torchvision behind one small interface
    experiment    one run end to end: resolve, train, predict, evaluate
    progress      the live bar and the plain progress lines (Jupyter and logs)
    runs          what a run folder holds (checkpoints, metrics log) and how to read it
    instances     the per-image predictions both engines return
    evaluate      COCO metrics (pycocotools underneath)
    submission    masks <-> RLE, the submission writer and validator
    ablation      the weight-decay ablation: variants x seeds, plan and cost, final metrics, verdicts, lr·λ·T
    stats         mean ± spread, Student-t intervals, Welch's difference (for comparing runs)
    inference_checks  the homework's inference mistakes measured: channel order, score threshold
    error_analysis, confusion   where the mAP goes: TIDE error types, the class-confusion matrix
    viz, plots_errors           figures and the interactive browser
    concepts      small computed examples of the course's ideas (IoU, anchors, LR, RLE, AP)
    exercises, exercise_bank    exercises that check themselves (solutions/SOLUTIONS.md)
    pipeline      papermill runs of the ordered notebooks under a profile
"""

__version__ = "0.1.0"
