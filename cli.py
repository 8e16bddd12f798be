"""tuban's command line: one click group; each command parses, calls the library and prints.

Expected problems (:class:`errors.TubanError`) print one line and exit with code 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from errors import TubanError
from pipeline.config import load_config
from pipeline.executors import EXECUTORS, Executor

if TYPE_CHECKING:
    from pipeline.batch import BatchReport

__all__ = ["main"]


class _Group(click.Group):
    def main(self, args=None, *rest, **kwargs):
        """Run the command line; called on the process's own arguments (``args`` None, as the
        ``tuban`` script does), freeze what is still alive when the command is done, so that
        the interpreter's last garbage collection at exit skips it: with the stages, geopandas
        and GDAL imported, that collection took 0.2-0.35 s of every command."""
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            if args is None:
                gc.freeze()

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TubanError as exc:
            click.echo(f"tuban: error: {exc}", err=True)
            ctx.exit(2)


def _executor_options(fn):
    fn = click.option(
        "--scheduler", metavar="ADDR", help="Address of a running Dask scheduler (tcp://host:8786)."
    )(fn)
    fn = click.option("--workers", type=click.IntRange(min=1), help="Worker processes [all CPUs].")(
        fn
    )
    fn = click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="processes",
        show_default=True,
        help="How tile jobs run: one process, a local process pool, or Dask.",
    )(fn)
    return fn


def _executor(executor: str, workers: int | None, scheduler: str | None) -> Executor:
    if scheduler and executor != "dask":
        executor = "dask"
    return Executor(name=executor, workers=workers, scheduler=scheduler)  # type: ignore[arg-type]


_config_arg = click.argument("config", type=click.Path(path_type=Path))
_lang_option = click.option(
    "--lang",
    type=click.Choice(["zh", "en"]),
    default="zh",
    show_default=True,
    help="Language of worklist headers and values.",
)


@click.group(cls=_Group)
@click.version_option(package_name="tuban")
def main() -> None:
    """tuban: change polygons (图斑) from quarterly imagery to street-office worklists."""


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Folder for the synthetic quarter and its outputs.",
)
@click.option(
    "--size",
    type=click.IntRange(min=1024),
    default=4096,
    show_default=True,
    help="Width and height of the area in 0.5 m pixels.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the scene.")
@click.option(
    "--quarters",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="Quarters to write and run; 2 adds the epoch 2024Q3 and a second batch.",
)
@click.option(
    "--no-run", is_flag=True, help="Only write the synthetic quarter, do not run the batch."
)
@_executor_options
def demo(
    out: Path, size: int, seed: int, quarters: int, no_run: bool, executor, workers, scheduler
) -> None:
    """Write synthetic quarters (imagery, offices, permits, truth) and run the batch on each."""
    from pipeline import batch
    from pipeline.demo import make_demo, score_quarter

    made = make_demo(out, size=size, seed=seed, quarters=quarters)
    for config in made.configs:
        click.echo(f"synthetic quarter: {config}")
    if no_run:
        return
    for quarter, config in enumerate(made.configs):
        report = batch.run(load_config(config), executor=_executor(executor, workers, scheduler))
        _print_report(report)
        score = score_quarter(made, quarter, report.out_dir)
        s = score.objects
        click.echo(
            f"against the planted truth: {s.found}/{s.planted} {'new ' * quarter}changes found "
            f"(recall {s.recall:.2f}), {s.correct}/{s.tasks} tasks correct "
            f"(precision {s.precision:.2f}), permitted buildings issued: {s.permitted_issued}"
        )
        click.echo(
            "  by cover: "
            + "; ".join(
                f"{cover}: {c.found}/{c.planted} found, {c.correct}/{c.tasks} tasks correct"
                for cover, c in score.covers.items()
            )
        )
        if score.followed:
            click.echo(
                f"earlier cases seen again: {score.linked}/{score.followed} linked to their "
                f"task, {score.reissued} issued again"
            )


@main.command()
@_config_arg
@_executor_options
@click.option("--resume", is_flag=True, help="Skip tiles an interrupted run already finished.")
@_lang_option
def run(config: Path, executor, workers, scheduler, resume, lang) -> None:
    """Run the quarterly batch: ingest both epochs, detect changes, write worklists."""
    cfg = load_config(config)
    with _executor(executor, workers, scheduler).start() as ex:
        from pipeline import batch  # a second or two of imports, while the workers start

        report = batch.run(cfg, executor=ex, lang=lang, resume=resume)
    _print_report(report)


@main.command()
@_config_arg
@click.option("--epoch", "epoch_id", required=True, help="ID of the epoch to ingest.")
@_executor_options
def ingest(config: Path, epoch_id: str, executor, workers, scheduler) -> None:
    """Put one epoch's imagery onto the grid (unchanged tiles are kept)."""
    cfg = load_config(config)
    with _executor(executor, workers, scheduler).start() as ex:
        from pipeline import batch

        index = batch.ingest(cfg, epoch_id, executor=ex)
    click.echo(f"{epoch_id}: {len(index.tiles)} tiles in {index.path(cfg.work_dir).parent}")


@main.command()
@_config_arg
@_executor_options
@click.option("--resume", is_flag=True, help="Skip tiles an interrupted run already finished.")
def changes(config: Path, executor, workers, scheduler, resume) -> None:
    """Detect suspects for [run].before → [run].after from the ingested epochs."""
    from pipeline.changes import changes_path

    cfg = load_config(config)
    with _executor(executor, workers, scheduler).start() as ex:
        from pipeline import batch

        result = batch.changes(cfg, executor=ex, resume=resume)
    click.echo(f"{len(result.suspects)} suspects on {len(result.tiles)} tiles: {changes_path(cfg)}")


@main.command()
@_config_arg
@_executor_options
@_lang_option
def worklists(config: Path, executor, workers, scheduler, lang: str) -> None:
    """Turn the quarter's suspects into tasks and write the GeoPackage and office worklists
    (image chips and the offices' sheets are made on the executor's workers)."""
    cfg = load_config(config)
    with _executor(executor, workers, scheduler).start() as ex:
        from pipeline import batch

        taskset, _ = batch.worklists(cfg, lang=lang, executor=ex)
    click.echo(
        f"{len(taskset.tasks)} tasks, {len(taskset.suppressed)} suppressed, "
        f"{len(taskset.unassigned)} unassigned: {batch.quarter_dir(cfg)}"
    )


def _print_report(report: BatchReport) -> None:
    c = report.counts
    click.echo(
        f"quarter {report.quarter}: {c.get('suspects', 0)} suspects → {c.get('tasks', 0)} tasks, "
        f"{c.get('suppressed', 0)} suppressed, {c.get('unassigned', 0)} unassigned"
    )
    click.echo("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    click.echo(f"outputs: {report.out_dir}")
    click.echo(f"  GeoPackage (open in QGIS): {report.out_dir / (report.quarter + '.gpkg')}")
    click.echo(f"  office worklists:          {report.out_dir / 'worklists'}")


@main.command("import-results")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--register",
    "register_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The task register ([paths] register) to update.",
)
@click.option("--by", help="Who imports, recorded with every change [the user name].")
def import_results(files: tuple[Path, ...], register_path: Path, by: str | None) -> None:
    """Check returned worklists (.xlsx, .csv, .gpkg) and apply them to the register, all or none."""
    from pipeline.feedback import ResultsError
    from pipeline.feedback import import_results as apply_returned

    try:
        report = apply_returned(list(files), register=register_path, by=by)
    except ResultsError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        raise
    click.echo(
        f"{len(report.updated)} tasks updated, {report.unchanged} unchanged, from {report.rows} "
        f"filled rows in {report.files} files: {register_path}"
    )


@main.command()
@click.option(
    "--register",
    "register_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The task register ([paths] register).",
)
@click.option("--quarter", help="Only the tasks issued in this quarter [all quarters].")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for the CSV, XLSX and PNG [stats/ beside the register].",
)
@_lang_option
def stats(register_path: Path, quarter: str | None, out: Path | None, lang: str) -> None:
    """Per office: issued, verified (核查率), closed (办结率), overdue, open key cases, rank."""
    from pipeline.stats import format_table
    from pipeline.stats import stats as office_stats

    report = office_stats(register_path, quarter=quarter, out_dir=out, lang=lang)  # type: ignore[arg-type]
    click.echo(format_table(report.table, lang=lang))  # type: ignore[arg-type]
    click.echo("written: " + ", ".join(str(f) for f in report.files))


@main.command()
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Mask to write: .png, or .tif on the input's grid.",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Model from `tuban train` [the unsupervised detector].",
)
@click.option(
    "--pixel-size",
    type=click.FloatRange(min=0, min_open=True),
    help="Metres per pixel of images that do not carry their own [0.5].",
)
def predict(
    before: Path, after: Path, out: Path, model: Path | None, pixel_size: float | None
) -> None:
    """Write the change mask of an image pair: single band, 0/255, the input's size."""
    from pipeline.learn import predict as predict_pair

    result = predict_pair(before, after, out=out, model=model, pixel_size=pixel_size)
    rows, cols = result.shape
    click.echo(
        f"{result.method}: {result.change_share:.1%} of {cols}x{rows} pixels at "
        f"{result.pixel_size:g} m changed: {result.path}"
    )


@main.command()
@click.argument("pair_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--out", required=True, type=click.Path(path_type=Path), help="Model file to write."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the pixel sampling and the classifier.",
)
def train(pair_dirs: tuple[Path, ...], out: Path, seed: int) -> None:
    """Learn the change scorer from labelled pairs folders (A/, B/, label/, meta.toml)."""
    from pipeline.learn import train as train_model

    report = train_model(list(pair_dirs), out=out, seed=seed)
    sizes = ", ".join(f"{p:g}" for p in report.pixel_sizes)
    click.echo(
        f"learned from {report.pixels} pixels ({report.change_pixels} change) of "
        f"{report.pairs} pairs at {sizes} m: {report.path}"
    )


@main.command()
@click.argument("pair_dir", type=click.Path(path_type=Path))
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Model from `tuban train` [the unsupervised detector].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
@click.option(
    "--per-pair",
    is_flag=True,
    help="Also score each pair alone (pooled figures first; worst pixel F1 first).",
)
def evaluate(pair_dir: Path, model: Path | None, as_json: bool, per_pair: bool) -> None:
    """Score change masks of a labelled pairs folder: pixel P/R/F1/IoU, object P/R/F1."""
    import json

    from pipeline.learn import evaluate as evaluate_pairs

    result = evaluate_pairs(pair_dir, model=model, progress=not as_json)
    if as_json:
        summary = result.summary()
        if per_pair:
            summary["by_pair"] = {name: s.summary() for name, s in result.pairs.items()}
        click.echo(json.dumps(summary))
        return
    s = result.score
    click.echo(
        f"{result.method} on {len(result.pairs)} pairs: pixels P {s.pixel_precision:.3f} "
        f"R {s.pixel_recall:.3f} F1 {s.pixel_f1:.3f} IoU {s.pixel_iou:.3f}; objects "
        f"P {s.object_precision:.3f} R {s.object_recall:.3f} F1 {s.object_f1:.3f} "
        f"({s.label_objects} labelled, {s.predicted_objects} predicted)"
    )
    if per_pair:
        width = max([len("pair"), *map(len, result.pairs)])
        click.echo(
            f"{'pair':<{width}} {'labelled px':>11} {'predicted px':>12} {'pix P':>6} "
            f"{'pix R':>6} {'pix F1':>6} {'obj F1':>6}"
        )
        for name, p in sorted(result.pairs.items(), key=lambda kv: (kv[1].pixel_f1, kv[0])):
            click.echo(
                f"{name:<{width}} {p.tp + p.fn:>11} {p.tp + p.fp:>12} "
                f"{p.pixel_precision:>6.3f} {p.pixel_recall:>6.3f} {p.pixel_f1:>6.3f} "
                f"{p.object_f1:>6.3f}"
            )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
