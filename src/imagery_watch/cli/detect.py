"""``imagery-watch detect`` and ``imagery-watch detect-pairs``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from ..config import load_config


class _Bar:
    """Chunks done / total with an ETA, on stderr (tqdm)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.start_done = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit="chunk", desc="chunks", dynamic_ncols=True,
                            smoothing=0.1)
            self.start_done = done
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _start_client(scheduler: str):
    from distributed import Client

    from ..errors import JobError

    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise JobError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); check the address "
                       "(tcp://host:8786) and that dask-scheduler is running") from None


def print_summary(summary: dict) -> None:
    """One screen: patches per rule, areas, time and throughput."""
    click.echo("")
    click.echo(f"Patches: {summary['patches_path']}  ({summary['patches']} patches)")
    click.echo(f"{'rule':<28}{'patches':>9}{'area m2':>14}{'area mu':>11}")
    for name, r in summary["per_rule"].items():
        click.echo(f"{name:<28}{r['patches']:>9}{r['area_m2']:>14,.0f}{r['area_mu']:>11,.1f}")
    secs = summary["seconds"]["total"]
    click.echo(
        f"Area {summary['area_km2']:.2f} km2, {summary['chunks_total']} chunks "
        f"({summary['chunks_reused']} reused, {summary['chunks_computed']} computed), "
        f"shift {summary['shift_px'][0]:+.1f}/{summary['shift_px'][1]:+.1f} px")
    click.echo(f"Time {secs:.1f} s, {summary['ground_mpx_per_s']:.1f} ground Mpx/s (both epochs)")
    for rec in summary.get("unprocessed", []):
        click.echo(f"NOT PROCESSED: {rec['area_m2'] / 1e6:.3f} km2 of the {rec['epoch']} epoch's sheet "
                   f"{rec['sheet']} (unreadable): no result there, not even 'no change'")


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--before", type=click.Path(), help="Before epoch: GeoTIFF/VRT or folder of sheets (overrides inputs.before).")
@click.option("--after", type=click.Path(), help="After epoch (overrides inputs.after).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Job folder for outputs (overrides job.out).")
@click.option("--chunk-px", type=click.IntRange(128, 16384), help="Chunk side in pixels (overrides processing.chunk_px).")
@click.option("--workers", type=click.IntRange(0, 1024), help="Local worker threads, 0 = one per core (overrides processing.workers).")
@click.option("--scheduler", help="Address of a dask.distributed scheduler (tcp://host:8786); default: run locally.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or step messages; summary only.")
def detect(config_path, before, after, out_dir, chunk_px, workers, scheduler, quiet):
    """Detect change patches between two epochs as configured in CONFIG (a TOML file).

    Writes OUT/patches.gpkg (layer `patches`), OUT/summary.json and the job state; a
    re-run resumes a killed job and recomputes nothing that is finished.
    """
    from ..pipeline import run_detect

    config = load_config(config_path)
    if before:
        config = config.replace("inputs", before=Path(before))
    if after:
        config = config.replace("inputs", after=Path(after))
    if out_dir:
        config = config.replace("job", out=Path(out_dir))
    if chunk_px:
        config = config.replace("processing", chunk_px=chunk_px)
    if workers is not None:
        config = config.replace("processing", workers=workers)
    if scheduler:
        config = config.replace("processing", scheduler=scheduler)

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    client = _start_client(config.processing.scheduler) if config.processing.scheduler else None
    if client is not None:
        say(f"running on the Dask cluster at {config.processing.scheduler}")
    bar = _Bar(enabled=not quiet)
    try:
        result = run_detect(config, client=client, workers=config.processing.workers or os.cpu_count(),
                            progress=bar, on_event=say)
    finally:
        bar.close()
        if client is not None:
            client.close()
    print_summary(result.summary)


@click.command("detect-pairs")
@click.argument("before_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("after_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the 0/255 PNG masks.")
@click.option("--pixel-size", "pixel_size_m", required=True, type=click.FloatRange(min=0.01), help="Ground pixel size in metres.")
@click.option("--rules", "rule_names", help="Comma-separated rule names to mark (default: every rule whose after-class is built).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config whose [[rules]] and [detection] to use (default: the standard rules).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Change model from `imagery-watch train`: the masks come from it instead of the rules.")
@click.option("--evidence", type=click.Choice(["segments", "pixels"]), default="segments", show_default=True,
              help="segments: construction and demolition from roof-like image segments (best on real imagery); "
                   "pixels: every rule by pixel class transitions, as `detect` does.")
@click.option("--min-area", "min_area_m2", type=click.FloatRange(min=0), help="Smallest change kept, m2, for every rule (default: each rule's min_area_m2; 30 suits single houses).")
@click.option("--shadow-check/--no-shadow-check", default=True, show_default=True,
              help="segments: keep only new buildings with new shadow around them; --no-shadow-check also keeps "
                   "flat construction (hardstanding, yards), with more false alarms.")
def detect_pairs(before_dir, after_dir, out_dir, pixel_size_m, rule_names, config_path, model_path, evidence,
                 min_area_m2, shadow_check):
    """Detect change in plain image pairs (same file names in BEFORE_DIR and AFTER_DIR).

    Writes one 0/255 PNG mask per pair into --out with the pair's name.
    """
    from ..pairs import run_pairs

    t0 = time.perf_counter()
    names = tuple(n.strip() for n in rule_names.split(",") if n.strip()) if rule_names else None
    report = run_pairs(before_dir, after_dir, out_dir, pixel_size_m=pixel_size_m, rule_names=names,
                       config_path=config_path, model_path=model_path, evidence=evidence, min_area_m2=min_area_m2,
                       shadow_check=shadow_check)
    how = (f"model: {report['model']} (threshold {report['threshold']:.3f})" if report.get("model")
           else f"rules: {', '.join(report['rules'])} ({report['evidence']} evidence)")
    click.echo(f"{report['pairs']} pairs, masks in {out_dir} ({time.perf_counter() - t0:.1f} s); {how}")
