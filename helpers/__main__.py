"""Command line: ``python -m helpers SUBCOMMAND ...`` (also installed as ``tinyvoc``).

Every user-facing problem is a :class:`helpers.errors.HelpersError`: printed as one
``error: ...`` line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_validate_data(args) -> int:
    from . import data

    summary = data.validate_root(args.root, check_images=not args.skip_images)
    print(data.format_summary(summary))
    return 0


def _cmd_stats(args) -> int:
    from . import data

    root = data.load_root(args.root, check_images=False)
    stats = data.dataset_stats(root.train)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(data.format_stats(stats))
    return 0


def _cmd_make_demo_data(args) -> int:
    from . import demo_data

    root = demo_data.make_demo_data(args.root, seed=args.seed, num_train=args.num_train, num_test=args.num_test)
    print(f"wrote demo data set to {root}")
    return 0


def _cmd_split(args) -> int:
    from . import data

    root = data.load_root(args.root, check_images=False)
    paths = data.make_split(root.train, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"train split: {paths.train}\nval split:   {paths.val}")
    return 0


def _cmd_evaluate(args) -> int:
    from . import evaluate
    from .io import write_json

    metrics = evaluate.evaluate(args.gt, args.results, iou_type=args.iou_type)
    print(evaluate.format_table(metrics, title=f"{args.iou_type} metrics"))
    if args.out:
        write_json(args.out, metrics, indent=2)
        print(f"wrote {args.out}")
    return 0


def _cmd_validate_submission(args) -> int:
    from . import submission

    summary = submission.validate_submission(args.test_json, args.submission)
    print(submission.format_summary(summary))
    return 0


def _cmd_train(args) -> int:
    from . import experiment

    run_dir = experiment.train(
        config=args.config,
        overrides=args.overrides,
        engine=args.engine,
        data_root=args.data,
        run_dir=args.run_dir,
        resume=args.resume,
    )
    print(f"run folder: {run_dir}")
    return 0


def _cmd_predict(args) -> int:
    from . import experiment

    summary = experiment.predict(
        run_dir=args.run_dir,
        images=args.images,
        out=args.out,
        checkpoint=args.checkpoint,
        score_thresh=args.score_thresh,
        device=args.device,
        image_dir=args.image_dir,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "validation"}, indent=2))
    return 0


def _cmd_run_notebooks(args) -> int:
    from . import pipeline

    params = dict(zip(args.param[::2], args.param[1::2])) if args.param else {}
    params = {k: pipeline.parse_param(v) for k, v in params.items()}
    run_root = pipeline.run_notebooks(
        profile=args.profile, data_root=args.data, run_name=args.name, params_file=args.params_file,
        params=params, only=args.only, report=False if args.no_report else None, log_output=args.log_output,
    )
    print(f"run folder: {run_root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate-data", help="check a Tiny VOC data root and print a summary")
    s.add_argument("root")
    s.add_argument("--skip-images", action="store_true", help="check the JSON only, not the image files")
    s.set_defaults(func=_cmd_validate_data)

    s = sub.add_parser("stats", help="statistics of the annotated (train) images of a data root")
    s.add_argument("root")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=_cmd_stats)

    s = sub.add_parser("make-demo-data", help="write the synthetic demo data set in the Tiny VOC layout")
    s.add_argument("root")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num-train", type=int, default=None, help="annotated images (default: the demo size)")
    s.add_argument("--num-test", type=int, default=None, help="test images (default: the demo size)")
    s.set_defaults(func=_cmd_make_demo_data)

    s = sub.add_parser("split", help="write the seeded class-stratified train/val split files")
    s.add_argument("root")
    s.add_argument("--out", required=True, help="folder for train.json and val.json")
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_split)

    s = sub.add_parser("evaluate", help="COCO metrics of a results file against a ground-truth file")
    s.add_argument("gt")
    s.add_argument("results")
    s.add_argument("--iou-type", choices=["segm", "bbox"], default="segm")
    s.add_argument("--out", help="write the metrics as JSON here")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("validate-submission", help="check a submission file against test.json")
    s.add_argument("test_json")
    s.add_argument("submission")
    s.set_defaults(func=_cmd_validate_submission)

    s = sub.add_parser("train", help="train Mask R-CNN with an experiment config")
    s.add_argument("--config", required=True, help="experiment YAML (configs/homework.yaml, configs/demo.yaml, ...)")
    s.add_argument("--engine", choices=["torchvision", "detectron2"], default="torchvision")
    s.add_argument("--data", default=None, help="data root in the Tiny VOC layout (default: the config's)")
    s.add_argument("--run-dir", default=None, help="run folder (default: the config's OUTPUT_DIR)")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    s.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("predict", help="predict images with a trained run and write a submission file")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--images", required=True,
                   help="a test.json (image ids from it), or the folder that holds it or its images")
    s.add_argument("--image-dir", default=None, help="where the images of --images are (default: test_images/ beside it)")
    s.add_argument("--out", required=True, help="submission JSON to write")
    s.add_argument("--checkpoint", default="best", help="best, final, last or a .pth path")
    s.add_argument("--score-thresh", type=float, default=None, help="default: the run config's")
    s.add_argument("--device", default=None, help="cpu or cuda (default: the run config's MODEL.DEVICE)")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("run-notebooks", help="execute the ordered notebooks headlessly (papermill) under a profile")
    s.add_argument("--profile", default="demo", help="demo, homework, gpu-ci or a profile YAML path")
    s.add_argument("--data", default=None, help="data root (overrides the profile's data_root)")
    s.add_argument("--name", default=None, help="run name: outputs go to runs/NAME (default: the profile's)")
    s.add_argument("-f", "--params-file", default=None, help="YAML file of notebook parameters")
    s.add_argument("-p", "--param", nargs=2, action="extend", metavar=("NAME", "VALUE"), default=[],
                   help="one notebook parameter (YAML value), repeatable")
    s.add_argument("--only", nargs="+", default=None, help="run only these notebooks (prefixes like 01 03)")
    s.add_argument("--no-report", action="store_true", help="do not rebuild report/ afterwards")
    s.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    s.set_defaults(func=_cmd_run_notebooks)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import HelpersError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HelpersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
