"""``imagery-watch review sample JOB_DIR --n N --seed S``: mark a review sample.

Draws a stratified random sample of the job's patches (strata: rule x score band) and
marks it in the table ``review_sample`` of ``JOB_DIR/patches.gpkg``; once its patches are
reviewed, ``imagery-watch indicators`` reports area estimates with 95 % intervals from it.
Attached to the ``review`` group in :mod:`imagery_watch.cli.review`.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sample")
@click.argument("job_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Sample size (patches).")
@click.option("--seed", type=int, required=True, help="Seed of the random draw (recorded with the sample).")
@click.option("--bands", "n_bands", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Score bands per rule (equal-count bands of the rule's patches ranked by score).")
@click.option("--replace", is_flag=True, help="Replace a sample marked before.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the sampled patches (id, stratum, rule, score band) to this CSV file.")
def sample(job_dir, n, seed, n_bands, replace, csv_out):
    """Mark a stratified random sample of N patches of JOB_DIR for review.

    Every rule's patches are cut into score bands; each stratum (rule x band) gets at least
    two patches (for its variance), the rest in proportion to its size. Review the sampled
    patches, then run `imagery-watch indicators JOB_DIR` for the estimates.
    """
    from ..io.job_outputs import write_text
    from ..io.patches import read_patches
    from ..jobs import JobFolder
    from ..review.sample_table import SAMPLE_TABLE, write_sample
    from ..sampling import draw_sample

    path = JobFolder(Path(job_dir)).patches
    patches = read_patches(path)
    try:
        drawn = draw_sample(patches, n, seed=seed, n_bands=n_bands)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--n") from None
    write_sample(path, drawn, seed=seed, replace=replace)
    sizes = drawn.groupby("stratum").agg(patches=("stratum_patches", "first"), sampled=("stratum_sample", "first"))
    click.echo(f"{'stratum':<40}{'patches':>9}{'sampled':>9}")
    for stratum, r in sizes.iterrows():
        click.echo(f"{stratum:<40}{int(r['patches']):>9}{int(r['sampled']):>9}")
    click.echo(f"marked {len(drawn)} of {len(patches)} patches (seed {seed}) in table {SAMPLE_TABLE} of {path}")
    if csv_out:
        write_text(csv_out, drawn.to_csv(index=False, lineterminator="\n"), encoding="utf-8-sig")
        click.echo(f"wrote {csv_out}")
