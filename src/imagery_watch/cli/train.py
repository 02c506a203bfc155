"""``imagery-watch train``: fit a change model on labelled image pairs, or on georeferenced
mosaics with reviewed patches as labels (``--patches``)."""

from __future__ import annotations

import time

import click


@click.command()
@click.argument("before_dir", type=click.Path(exists=True))
@click.argument("after_dir", type=click.Path(exists=True))
@click.argument("label_dir", type=click.Path(exists=True, file_okay=False), required=False)
@click.option("--patches", "patches_path", type=click.Path(exists=True, dir_okay=False),
              help="Reviewed patches (a job's patches.gpkg) as labels: BEFORE and AFTER are then the two "
                   "epochs' mosaics (GeoTIFF/VRT or folders of sheets) and LABEL_DIR is left out.")
@click.option("--pixel-size", "pixel_size_m", type=click.FloatRange(min=0.01),
              help="Ground pixel size of the images in metres (image pairs; mosaics carry their own).")
@click.option("--out", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (one file; give it to detect-pairs --model).")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Train only on images whose file name matches GLOB (repeatable), e.g. 'train_*'.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out images whose file name matches GLOB (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the pixel sample and of the model.")
@click.option("--max-samples", default=200_000, show_default=True, type=click.IntRange(min=100),
              help="Analysis pixels sampled for training (change pixels up to half).")
@click.option("--segment-features/--no-segment-features", default=True, show_default=True,
              help="Labelled pairs: also learn from the roof-like segments of `detect-pairs --evidence segments` "
                   "and add to their new buildings (about 3x slower to train; no effect with --patches).")
@click.option("--quiet", "-q", is_flag=True, help="No step messages; the summary line only.")
def train(before_dir, after_dir, label_dir, patches_path, pixel_size_m, model_path, include, exclude, seed,
          max_samples, segment_features, quiet):
    """Train a change model on labelled pairs: same file names in BEFORE_DIR, AFTER_DIR and
    LABEL_DIR (labels: 0/255 or 0/1 masks, PNG/BMP/TIF, 255 or 1 = change).

    The threshold is chosen by out-of-fold F1 on the training pairs; the model, its feature
    list, pixel size and training figures go to one file (--out).

    With --patches: BEFORE_DIR and AFTER_DIR are georeferenced mosaics and the labels are the
    reviewed patches (illegal/legal = change, false_alarm = no change, pending and
    field_visit left out; pixels outside every patch are sampled as no change). The
    threshold is then the patch-level one used by `detect` with `[detection] model`: a
    patch is kept when the model's mean change probability over it reaches it.
    """
    from ..errors import ConfigError
    from ..learn import fit_change_model, read_labelled_pairs, save_model

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    if patches_path is not None:
        if label_dir is not None or include or exclude:
            raise ConfigError("--patches takes the labels from the reviewed patches: leave out LABEL_DIR, "
                              "--include and --exclude")
        import tempfile

        from ..io.patches import read_patches
        from ..patch_model import fit_patch_model, open_mosaic_pair

        patches = read_patches(patches_path)
        with tempfile.TemporaryDirectory(prefix="iw-train-") as work:
            before, after = open_mosaic_pair(before_dir, after_dir, work_dir=work)
            model = fit_patch_model(patches, before, after, seed=seed, on_event=say)
        save_model(model, model_path)
        oof = model.summary["out_of_fold"]
        click.echo(f"model {model_path}: {model.summary['accepted_patches']} accepted and "
                   f"{model.summary['rejected_patches']} rejected patches, patch threshold {model.threshold:.2f}, "
                   f"out-of-fold patch precision {oof['precision']:.3f} (rules alone {oof['rules_precision']:.3f}), "
                   f"recall {oof['recall']:.3f}, {time.perf_counter() - t0:.1f} s")
        return
    if label_dir is None or pixel_size_m is None:
        raise ConfigError("give LABEL_DIR and --pixel-size for labelled image pairs, or --patches PATCHES.gpkg "
                          "for mosaics with reviewed patches")

    pairs = read_labelled_pairs(before_dir, after_dir, label_dir, include=include, exclude=exclude)
    say(f"{len(pairs)} labelled pairs: {', '.join(p.name for p in pairs[:5])}{', ...' if len(pairs) > 5 else ''}")
    model = fit_change_model(pairs, pixel_size_m=pixel_size_m, seed=seed, max_samples=max_samples,
                             objects=segment_features, on_event=say)
    save_model(model, model_path)
    oof = model.summary["out_of_fold"]
    click.echo(f"model {model_path}: {len(pairs)} pairs, threshold {model.threshold:.3f}, out-of-fold F1 "
               f"{oof['f1']:.3f} (precision {oof['precision']:.3f}, recall {oof['recall']:.3f}), "
               f"{time.perf_counter() - t0:.1f} s")
