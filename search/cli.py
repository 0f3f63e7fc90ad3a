"""``frontier``: run a search, check a spec, inspect the front, rerun a trial.

    frontier run SPEC [--trials N] [--name NAME] [--address ADDR] [--resume] [--no-cache] [--cache DIR] [--warm-start RUN_DIR]
    frontier clean RUN_DIR [--dry-run]
    frontier check SPEC
    frontier front RUN_DIR [--html FILE] [--json] [--all]
    frontier rerun RUN_DIR --trial best|ID [--out DIR] [--max-size-bytes B] [--max-latency-ms MS]
    frontier rerun RUN_DIR --front
    frontier sweep MODEL_DIR [--groups G ...] [--ks K ...] [--max-drop D]

A user's mistake (a bad spec, a missing file, an unknown trial) prints one line per problem,
``frontier: <key path>: <what is wrong>``, and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from trainables.errors import FrontierDeprecation, FrontierError
from trainables.layout import FinalFolder, RunFolder

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frontier", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the search a spec describes")
    run.add_argument("spec")
    run.add_argument("--trials", type=int, help="override the spec's trial count")
    run.add_argument("--name", help="run name (default: the spec's name); results go to runs/NAME/")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--resume", action="store_true", help="resume the run of the same name")
    run.add_argument("--no-cache", action="store_true", help="turn the stage cache off")
    run.add_argument("--cache", metavar="DIR", help="a stage cache shared across runs (default: RUN_DIR/cache)")
    run.add_argument("--runs", default="runs", help="folder holding the runs (default: runs)")
    run.add_argument("--warm-start", metavar="RUN_DIR", help="run the front plans of this earlier run first")
    check = sub.add_parser("check", help="validate a spec; one line per problem, exit 2 if any")
    check.add_argument("spec")
    check.add_argument("--address", help="the spec runs on this Ray cluster: skip the local resource check")
    clean = sub.add_parser("clean", help="what a run holds on disk; remove finished trials' checkpoints and unheld cache entries")
    clean.add_argument("run_dir")
    clean.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    front = sub.add_parser("front", help="show the Pareto front of a finished run")
    front.add_argument("run_dir")
    front.add_argument("--html", help="write a self-contained plotly page to this file")
    front.add_argument("--json", action="store_true", help="print the front as JSON")
    front.add_argument("--all", action="store_true", help="the front of every ok trial, infeasible ones too")
    rerun = sub.add_parser("rerun", help="rerun a trial as a final exported model")
    rerun.add_argument("run_dir")
    which = rerun.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", help="'best' or a trial id")
    which.add_argument("--front", action="store_true",
                       help="rerun every front trial at the full budget; search vs full objectives and their rank correlation")
    rerun.add_argument("--out", help="output folder (default: RUN_DIR/final/<trial>)")
    rerun.add_argument("--max-size-bytes", type=float, help="constraint for --trial best")
    rerun.add_argument("--max-latency-ms", type=float, help="constraint for --trial best")
    sweep = sub.add_parser("sweep", help="sharing sensitivity of a final model (from rerun), per layer group")
    sweep.add_argument("model_dir")
    sweep.add_argument("--groups", nargs="+", help="layer groups to sweep (default: all)")
    sweep.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    sweep.add_argument("--method", choices=["kmeans", "equal"], default="kmeans")
    sweep.add_argument("--max-drop", type=float, default=0.01, help="accuracy drop allowed in the proposal")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_deprecation
            return _dispatch(args)
    except FrontierError as exc:
        for line in str(exc).splitlines() or ["error"]:
            print(f"frontier: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("frontier: interrupted; finished trials are kept in the run folder", file=sys.stderr)
        return 130


_SHOW_WARNING = warnings.showwarning


def _show_deprecation(message, category, filename, lineno, file=None, line=None) -> None:
    """A :class:`FrontierDeprecation` as one line on stderr (no source line); other warnings as Python shows them."""
    if issubclass(category, FrontierDeprecation):
        print(f"frontier: warning: {message}", file=sys.stderr)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        from .spec.check import check_spec

        spec = check_spec(args.spec, address=args.address)
        seeds = f" of {spec.repeats} seeds each" if spec.repeats > 1 else ""
        print(f"{args.spec}: ok ({spec.trials} trials{seeds}, objectives {', '.join(spec.objective_names)})")
        return 0
    if args.command == "run":
        from .run.driver import run_search
        from .spec.check import check_spec

        if args.trials is not None and args.trials < 1:
            raise FrontierError(f"--trials: must be >= 1 but got {args.trials}")
        if args.cache is not None and args.no_cache:
            raise FrontierError("--cache: a shared cache and --no-cache exclude each other")
        spec = check_spec(args.spec, address=args.address)
        run_dir = run_search(spec, Path(args.spec).read_text(), name=args.name, address=args.address,
                             trials=args.trials, resume=args.resume, cache=False if args.no_cache else None,
                             runs_root=args.runs, warm_start=args.warm_start, cache_dir=args.cache)
        run = RunFolder(run_dir)
        print(f"results: {run.trials_csv} and {run.front_json}")
        print(f"next: frontier front {run_dir} --html front.html ; frontier rerun {run_dir} --trial best")
        return 0
    if args.command == "clean":
        from .run.clean import clean_run, format_report

        print(format_report(clean_run(args.run_dir, dry_run=args.dry_run)))
        return 0
    if args.command == "front":
        from .results.report import show_front

        show_front(args.run_dir, html=args.html, as_json=args.json, all_trials=args.all)
        return 0
    if args.command == "sweep":
        from .final.sweep import sweep

        proposal = sweep(args.model_dir, groups=args.groups, ks=args.ks, method=args.method, max_drop=args.max_drop)
        final = FinalFolder(Path(args.model_dir))
        print(f"wrote {args.model_dir}/{final.sensitivity_csv.name} and {final.sensitivity_html.name}")
        print("proposal for budgets.share.groups: " + json.dumps(proposal))
        return 0
    from .final.rerun import rerun, rerun_front

    if args.front:
        rerun_front(args.run_dir)
        run = RunFolder(Path(args.run_dir))
        print(f"final models: {run.front_rerun_json.parent}/<trial>/ ; report: {run.front_rerun_json}")
        return 0
    out = rerun(args.run_dir, args.trial, out=args.out, max_size_bytes=args.max_size_bytes,
                max_latency_ms=args.max_latency_ms)
    print(f"final model: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
