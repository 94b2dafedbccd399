"""The tiny model and schedule both engines' tests train with: seconds per run on a CPU."""

MAX_ITER = 6
# 6 iterations, a checkpoint and an evaluation every 3.
TINY = {
    "INPUT.MIN_SIZE_TRAIN": "(96,)",
    "INPUT.MAX_SIZE_TRAIN": "128",
    "INPUT.MIN_SIZE_TEST": "96",
    "INPUT.MAX_SIZE_TEST": "128",
    "SOLVER.IMS_PER_BATCH": "2",
    "SOLVER.BASE_LR": "0.01",
    "SOLVER.WARMUP_ITERS": "2",
    "SOLVER.MAX_ITER": str(MAX_ITER),
    "SOLVER.CHECKPOINT_PERIOD": "3",
    "TEST.EVAL_PERIOD": "3",
    "MODEL.FPN.OUT_CHANNELS": "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM": "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM": "16",
    "MODEL.ROI_MASK_HEAD.NUM_CONV": "1",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "50",
    "TEST.DETECTIONS_PER_IMAGE": "20",
    "DATALOADER.NUM_WORKERS": "0",
}


def tiny_overrides(**extra: str) -> list[str]:
    items = {**TINY, **extra}
    return [x for kv in items.items() for x in kv]
