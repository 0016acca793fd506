"""The ``realnet`` command: run the pipeline, inspect artifacts and data, predict, serve deployments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from realnet_core.config import ConfigError

# ---------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from flows.runner import run_pipeline

    overrides = list(args.set or [])
    roots = {args.dataset or "demo": args.data_root} if args.data_root else None
    summary = run_pipeline(
        categories=args.category, dataset=args.dataset, data_roots=roots, profile=args.config,
        overrides=overrides, rerun=args.rerun, artifacts=args.artifacts, use_prefect=not args.no_prefect,
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    import pandas as pd

    from flows.reports import comparison, run_metrics

    rows = summary["stages"]
    df = pd.DataFrame(rows)[["dataset", "category", "stage", "status", "key", "seconds"]]
    print(df.to_string(index=False))
    metrics = run_metrics(rows)
    if not metrics.empty:
        cols = ["dataset", "category", "image_auroc", "pixel_auroc", "pro",
                "image_auroc_paper", "pixel_auroc_paper", "pro_paper", "note"]
        print("\nmetrics (percent) vs the paper:")
        print(comparison(metrics)[cols].to_string(index=False))
    print(f"\nartifacts: {summary['artifacts']}   total {summary['seconds']:.1f} s")


def cmd_status(args: argparse.Namespace) -> int:
    from flows.runner import status_table

    df = status_table(args.config, args.set or [], args.category, args.dataset,
                      {args.dataset or "demo": args.data_root} if args.data_root else None, args.artifacts)
    if args.json:
        print(df.to_json(orient="records", indent=2))
        return 0
    print(df.drop(columns="problem").to_string(index=False))
    for problem in df.loc[df.state == "damaged", "problem"]:  # the file at fault, in full
        print(f"damaged: {problem}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from stages.tables import load, table_stage

    stage, keys = table_stage(args.name), None
    if args.current:  # the artifacts of this config, which need not be the newest ones
        from flows.runner import status_table

        status = status_table(args.config, args.set or [], args.category, args.dataset,
                              {args.dataset or "demo": args.data_root} if args.data_root else None, args.artifacts)
        keys = set(status.loc[status.stage == stage, "key"])
    df = load(args.name, args.artifacts or _default_artifacts(), keys=keys)
    if args.dataset and len(df):
        df = df[df.dataset == args.dataset]
    if args.category and len(df):
        df = df[df.category.isin(args.category)]
    if args.json:
        print(df.to_json(orient="records", indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.width", 200):
            print(df.to_string(index=False, max_rows=args.max_rows or None) if len(df)
                  else f"no {args.name} rows under {args.artifacts or _default_artifacts()} for this selection")
    return 0


def _data_reports(args: argparse.Namespace) -> list[dict]:
    """The checked categories: the benchmark readers for a root alone, the config's view (own folders, the
    validation share, the foreground rule) where a config, overrides, a preview or the folder dataset ask."""
    from realnet_core.data.check import check_dataset

    if args.dataset != "folder" and not (args.config or args.set or args.preview):
        if not args.root:
            raise ValueError(f"data check --dataset {args.dataset}: give --root (the dataset's root folder)")
        return check_dataset(args.dataset, args.root, args.category or None)
    from flows.data_tools import check_categories, folder_categories, write_preview
    from flows.plan import make_config

    cfg = make_config(args.config or "demo", args.set, args.dataset, {args.dataset: args.root} if args.root else None)
    if args.category:
        categories = list(args.category)
    elif args.dataset == "folder":
        categories = folder_categories(cfg)
    else:
        from realnet_core.data.registry import DATASETS

        categories = [c for c in DATASETS[args.dataset] if args.root and (Path(args.root) / c).is_dir()]
    reports = check_categories(cfg, args.dataset, categories)
    if args.preview:
        for report in reports:
            report["preview"] = str(write_preview(cfg, args.dataset, report["category"], args.preview))
    return reports


def cmd_data_check(args: argparse.Namespace) -> int:
    from realnet_core.data.errors import DatasetProblems

    try:
        reports = _data_reports(args)
    except DatasetProblems as exc:  # a check lists every problem, one per line
        if len(exc.problems) == 1:
            print(f"realnet: error: {exc.problems[0]}", file=sys.stderr)
            return 2
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"realnet: error: {len(exc.problems)} problems in {args.dataset} under {args.root}", file=sys.stderr)
        return 2
    for report in reports:  # not errors, but said every time (README, "Data rules")
        for warning in report.get("warnings", []):
            print(f"realnet: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(pd.DataFrame(reports).drop(columns="warnings", errors="ignore").to_string(index=False))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from realnet_core.data.demo import build_demo_dataset

    out = build_demo_dataset(args.out, size=args.size, seed=args.seed)
    print(f"demo dataset written to {out}")
    return 0


def cmd_dev_data(args: argparse.Namespace) -> int:
    from realnet_core.data.devset import build_dev_dataset

    out = build_dev_dataset(args.out, seed=args.seed)
    print(f"development set written to {out}")
    return 0


def cmd_devbench(args: argparse.Namespace) -> int:
    from flows.bench.devbench import run_devbench

    table = run_devbench(args.config, args.set, args.category, args.data_root, args.artifacts, args.baseline_only)
    print(table.to_json(orient="records", indent=2) if args.json else table.to_string(index=False, float_format="%.4f"))
    return 0


PREDICT_COLUMNS = ("path", "score", "threshold", "decision", "heatmap", "mask")


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from flows.predict import predict

    rows = predict(args.model, args.images, args.out, args.device, args.pool, args.engine)
    if args.json:  # one JSON list, printed once every image is scored
        print(json.dumps(list(rows), indent=2))
        return 0
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=PREDICT_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        return 0
    warned = False
    for row in rows:  # path, score, threshold, decision, heat map: one tab-separated line per image, as it is scored
        if row["threshold"] is None and not warned:
            print(f"realnet: warning: {args.model} has no stored threshold (no calibrate artifact beside it, "
                  "data.val_fraction was 0, or an export without one): scores only, no ok/defect decision",
                  file=sys.stderr)
            warned = True
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.6f}"
        print(f"{row['path']}\t{row['score']:.6f}\t{threshold}\t{row['decision'] or '-'}\t{row['heatmap']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.html_report import write_report

    path = write_report(args.artifacts or _default_artifacts(), args.out, [args.dataset] if args.dataset else None,
                        args.category)
    print(f"report written to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stages.export.write import export_model

    meta = export_model(args.model, args.format, args.out, args.precision)
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        diff = meta["parity"]
        print(f"{meta['method']} model {meta['artifact_key'] or args.model} exported to {args.out} "
              f"({meta['format']}, {meta['precision']}, input {meta['image_size']} px); largest difference from "
              f"PyTorch: map {diff['max_map_difference']:.2e}, score {diff['max_score_difference']:.2e}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.deploy import serve

    serve()
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from flows.bench.run import run_bench

    result = run_bench(args.profile, device=args.device, quick=args.quick, overrides=args.set or None,
                       parts=args.part or None, channels_last=args.channels_last, trace_dir=args.trace)
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    if result["errors"]:  # the other parts' numbers are above; a script must still see the failure
        print(f"realnet: error: bench part(s) failed: {', '.join(result['errors'])} (see 'errors')", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- parser


def _default_artifacts() -> str:
    from flows.plan import artifacts_root

    return artifacts_root(None)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more: {text!r}")
    return value


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="demo", help="profile name (demo, paper) or a YAML file")
    p.add_argument("--dataset", help="mvtec, visa, mpdd, btad, demo, dev, or folder (your own: any category name)")
    p.add_argument("--data-root", help="root folder of --dataset")
    p.add_argument("--category", action="append", help="a category (repeatable); 'all' for all 36")
    p.add_argument("--artifacts",
                   help="artifact root: folder or fsspec URL (default $REALNET_ARTIFACTS or ./artifacts)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="config override, e.g. afs.dims=[128,256,256,128]")
    p.add_argument("--json", action="store_true", help="print machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the pipeline (default: the demo, through Prefect's ephemeral API)")
    _run_options(p)
    p.add_argument("--rerun", action="append", metavar="STAGE", help="force STAGE and everything downstream")
    p.add_argument("--no-prefect", action="store_true", help="run the stages in this process without Prefect")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="which artifacts exist, and which are stale for the current config")
    _run_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tables", help="print an artifact table across datasets and categories")
    p.add_argument("name", help="metrics, scores, afs, train_log or loss_log")
    _run_options(p)
    p.add_argument("--current", action="store_true",
                   help="the artifacts of the config given by --config/--set (default: the newest of each category)")
    p.add_argument("--max-rows", type=_count, default=200, help="rows to print, 0 for all (default: 200)")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="validate a dataset tree, print counts and the metrics it supports")
    c.add_argument("--dataset", required=True, help="mvtec, visa, mpdd, btad, demo, dev or folder (your own data)")
    c.add_argument("--root", help="the dataset's root folder (holding one folder per category); for folder data "
                   "named in the config's data.folders, not needed")
    c.add_argument("--category", action="append", help="only this category (repeatable; default: every one present)")
    c.add_argument("--config", help="a profile or YAML file whose data section (folders, val_fraction, foreground) "
                   "is checked")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, as for run")
    c.add_argument("--preview", metavar="DIR", help="also write DIR/<dataset>_<category>_foreground.png: training "
                   "images with the foreground rule's mask")
    c.add_argument("--json", action="store_true", help="print the counts as JSON")
    c.set_defaults(func=cmd_data_check)

    p = sub.add_parser("demo-data", help="write the small demo dataset (MVTec layout)")
    p.add_argument("out", nargs="?", default="demo_data", help="folder to write (default: demo_data)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cut positions and defects (default: 0)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("dev-data", help="write the development set (real photographs, hand-made defects)")
    p.add_argument("out", nargs="?", default="dev_data", help="folder to write (default: dev_data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cut positions and defects (default: 0)")
    p.set_defaults(func=cmd_dev_data)

    p = sub.add_parser("devbench", help="a profile on the development set, beside nearest-neighbour patch matching")
    p.add_argument("--config", default="demo", help="profile name (demo, paper) or a YAML file")
    p.add_argument("--category", action="append", help="a development category (repeatable; default: all four)")
    p.add_argument("--data-root", default="dev_data", help="the development set (built there when missing)")
    p.add_argument("--artifacts", default="artifacts_dev", help="artifact root of these runs (default: artifacts_dev)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, as for run")
    p.add_argument("--baseline-only", action="store_true", help="only the nearest-neighbour baseline")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_devbench)

    p = sub.add_parser("predict", help="score images, decide ok or defect, write heat maps and defect masks")
    p.add_argument("--model", required=True, help="a model artifact folder (train_realnet, train_simplenet, "
                   "train_prn) or its model file, whose thresholds are found beside it, or a calibrate artifact "
                   "folder; with --engine onnx|openvino, an export folder")
    p.add_argument("images", nargs="+", help="image files, or folders to search for images")
    p.add_argument("--engine", default="torch",
                   help="torch (the artifact's PyTorch model), onnx or openvino (a `realnet export` folder)")
    p.add_argument("--out", default="predictions",
                   help="folder for <name>_heatmap.png (image | heat map), <name>_map.npy and <name>_defect.png "
                   "(the defect region: pixels above the pixel threshold) (default: predictions)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--pool", type=_count, default=None,
                   help="average-pooling size of the image score (RealNet only; default: the one the threshold was "
                   "set with, else 16 at 256 px, scaled to the model's size)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list: path, score, threshold, decision, "
                     "heatmap, map, mask per image")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header: " + ", ".join(PREDICT_COLUMNS))
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="one self-contained HTML page: metrics vs the paper, ROC curves, score "
                       "histograms with the threshold, worst false positives and negatives, synthetic anomalies")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--artifacts", help="artifact root, a local folder (default $REALNET_ARTIFACTS or ./artifacts)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--category", action="append", help="only this category (repeatable)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("export", help="write a model's whole inference path as one ONNX or OpenVINO graph")
    p.add_argument("--model", required=True, help="a model artifact folder (or its model file)")
    p.add_argument("--format", required=True, help="onnx or openvino")
    p.add_argument("--out", required=True, help="a new (or empty) folder for the graph and export.json")
    p.add_argument("--precision", default="float32", help="float32 (default) or float16 weights and activations")
    p.add_argument("--json", action="store_true", help="print the export's metadata as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve the realnet deployments from this machine")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="time the stages on synthetic inputs of a profile's sizes")
    p.add_argument("--profile", default="demo", help="demo or paper, or a YAML file (default: demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--part", action="append", help="only these parts (repeatable): sia, diffusion_train, afs, "
                   "inference (the configured method's detector), roofline, memory_model, loading, cached_rerun, "
                   "busy_cpu, export, and <method>_train and <method>_inference for each registered method "
                   "(realnet_train, prn_inference, ...; an unknown part's error lists them all)")
    p.add_argument("--channels-last", action="store_true", help="run the networks in channels_last layout")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. runtime.compile=true")
    p.add_argument("--trace", metavar="DIR", help="also write a profiler trace and op table of each part to DIR")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `realnet tables scores | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as exc:  # one clear line for the user; the traceback only with REALNET_DEBUG
        if _debug():
            raise
        print(f"realnet: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ConfigError | FileNotFoundError | PermissionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if type(exc).__name__ not in str(exc) else str(exc)


def _debug() -> bool:
    import os

    return bool(os.environ.get("REALNET_DEBUG"))


if __name__ == "__main__":
    sys.exit(main())
