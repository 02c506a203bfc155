"""``imagery-watch train``: fit a change model on labelled image pairs."""

from __future__ import annotations

import time

import click


@click.command()
@click.argument("before_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("after_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("label_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--pixel-size", "pixel_size_m", required=True, type=click.FloatRange(min=0.01),
              help="Ground pixel size of the images in metres.")
@click.option("--out", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (one file; give it to detect-pairs --model).")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Train only on images whose file name matches GLOB (repeatable), e.g. 'train_*'.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out images whose file name matches GLOB (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the pixel sample and of the model.")
@click.option("--max-samples", default=200_000, show_default=True, type=click.IntRange(min=100),
              help="Analysis pixels sampled for training (change pixels up to half).")
@click.option("--quiet", "-q", is_flag=True, help="No step messages; the summary line only.")
def train(before_dir, after_dir, label_dir, pixel_size_m, model_path, include, exclude, seed, max_samples, quiet):
    """Train a change model on labelled pairs: same file names in BEFORE_DIR, AFTER_DIR and
    LABEL_DIR (labels: 0/255 or 0/1 masks, PNG/BMP/TIF, 255 or 1 = change).

    The threshold is chosen by out-of-fold F1 on the training pairs; the model, its feature
    list, pixel size and training figures go to one file (--out).
    """
    from ..learn import fit_change_model, read_labelled_pairs, save_model

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    pairs = read_labelled_pairs(before_dir, after_dir, label_dir, include=include, exclude=exclude)
    say(f"{len(pairs)} labelled pairs: {', '.join(p.name for p in pairs[:5])}{', ...' if len(pairs) > 5 else ''}")
    model = fit_change_model(pairs, pixel_size_m=pixel_size_m, seed=seed, max_samples=max_samples, on_event=say)
    save_model(model, model_path)
    oof = model.summary["out_of_fold"]
    click.echo(f"model {model_path}: {len(pairs)} pairs, threshold {model.threshold:.3f}, out-of-fold F1 "
               f"{oof['f1']:.3f} (precision {oof['precision']:.3f}, recall {oof['recall']:.3f}), "
               f"{time.perf_counter() - t0:.1f} s")
