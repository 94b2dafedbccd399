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
    from .io import check_output_dir

    check_output_dir(args.root, "data root")
    root = demo_data.make_demo_data(args.root, seed=args.seed, num_train=args.num_train, num_test=args.num_test)
    print(f"wrote demo data set to {root}")
    return 0


def _cmd_split(args) -> int:
    from . import data

    from .io import check_output_dir

    check_output_dir(args.out, "split")
    root = data.load_root(args.root, check_images=False)
    paths = data.make_split(root.train, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(f"train split: {paths.train}\nval split:   {paths.val}")
    return 0


def _cmd_evaluate(args) -> int:
    from . import evaluate
    from .io import check_output_path, write_json

    if args.out:
        check_output_path(args.out, "metrics")
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


# train's options, and whether each takes a value: accepted after the KEY VALUE overrides as well
_TRAIN_OPTIONS = {"--config": True, "--engine": True, "--data": True, "--run-dir": True, "--resume": False}


def _train_options_among_overrides(args) -> None:
    """Move train options given after (or among) the overrides out of them, as if given first."""
    from .errors import ConfigError

    items, rest, i = list(args.overrides), [], 0
    while i < len(items):
        token = items[i]
        name, has_value, value = token.partition("=")
        if name in _TRAIN_OPTIONS:
            if not _TRAIN_OPTIONS[name]:
                args.resume, i = True, i + 1
                continue
            if not has_value:
                if i + 1 >= len(items):
                    raise ConfigError(f"train: {name} needs a value")
                value, i = items[i + 1], i + 1
            setattr(args, name[2:].replace("-", "_"), value)
            i += 1
            continue
        if len(rest) % 2 == 0 and token.startswith("-") and not (token == "--" and not rest):
            known = ", ".join(_TRAIN_OPTIONS)
            raise ConfigError(f"train: unknown option {token!r} (options: {known}; overrides are KEY VALUE pairs)")
        rest.append(token)
        i += 1
    args.overrides = rest
    if not args.config:
        raise ConfigError("train: --config is required (configs/homework.yaml, configs/demo.yaml, ...)")


def _cmd_train(args) -> int:
    from . import experiment

    _train_options_among_overrides(args)
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
        tta=args.tta,
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
    s.add_argument("--config", default=None, help="experiment YAML (configs/homework.yaml, configs/demo.yaml, ...), "
                   "required")
    s.add_argument("--engine", choices=["torchvision", "detectron2"], default="torchvision")
    s.add_argument("--data", default=None, help="data root in the Tiny VOC layout (default: the config's)")
    s.add_argument("--run-dir", default=None, help="run folder (default: the config's OUTPUT_DIR)")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    s.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100 (the options above may also follow them)")
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
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation (TEST.AUG.*: each of its sizes, and flipped); default: the run config's")
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


def _close_progress_bars() -> None:
    """Close any progress bar still open, so what follows starts on a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the error itself
            pass
    sys.stdout.flush()


def one_line(error: BaseException) -> str:
    """An error's message on one line (a message from a library may span several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    from .errors import HelpersError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HelpersError as e:
        _close_progress_bars()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
