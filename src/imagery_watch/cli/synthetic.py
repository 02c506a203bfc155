"""``imagery-watch synthetic``: generate and preview synthetic test scenes."""

from __future__ import annotations

import dataclasses

import click

from ..synthetic import DistractorOptions, generate_scene, preview_scene

_DISTRACTORS = tuple(f.name for f in dataclasses.fields(DistractorOptions))


@click.group()
def synthetic() -> None:
    """Synthetic two-epoch orthophoto scenes with known changes (the test bed)."""


@synthetic.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same bytes.")
@click.option("--width", "width_px", type=int, default=2048, show_default=True, help="Scene width in pixels.")
@click.option("--height", "height_px", type=int, default=2048, show_default=True, help="Scene height in pixels.")
@click.option("--sheet-px", type=int, default=2048, show_default=True, help="Map sheet size in pixels (multiple of 16).")
@click.option("--tile-px", type=int, default=512, show_default=True, help="Internal GeoTIFF tile size (multiple of 16).")
@click.option("--pixel-size", "pixel_size_m", type=float, default=0.2, show_default=True, help="Pixel size in metres.")
@click.option("--nir", is_flag=True, help="Add a near-infrared 4th band.")
@click.option("--compress", type=click.Choice(["jpeg", "deflate"]), default="jpeg", show_default=True,
              help="jpeg: YCbCr JPEG with an internal mask; deflate: lossless, nodata 0.")
@click.option("--jpeg-quality", type=int, default=88, show_default=True, help="JPEG quality of the sheets.")
@click.option("--no-changes", is_flag=True, help="No true changes: the after epoch differs only by distractors.")
@click.option("--no-distractors", is_flag=True, help="No distractors (with --no-changes: identical epochs).")
@click.option("--without", "without", multiple=True, type=click.Choice(_DISTRACTORS),
              help="Switch off one distractor (repeatable).")
@click.option("--changes-per-km2", type=float, default=18.0, show_default=True,
              help="Wanted number of changes per rule and square kilometre.")
@click.option("--origin", nargs=2, type=float, default=None,
              help="Easting and northing (EPSG:4549) of the top-left corner.")
def generate(out, seed, width_px, height_px, sheet_px, tile_px, pixel_size_m, nir, compress, jpeg_quality,
             no_changes, no_distractors, without, changes_per_km2, origin):
    """Generate a scene into OUT: before/, after/, layers.gpkg, scene.json."""
    opts = DistractorOptions.all(not no_distractors)
    if without:
        opts = dataclasses.replace(opts, **{name: False for name in without})
    files = generate_scene(out, seed=seed, width_px=width_px, height_px=height_px, pixel_size_m=pixel_size_m,
                           sheet_px=sheet_px, tile_px=tile_px, nir=nir, compress=compress,
                           changes=not no_changes, distractors=opts, origin=tuple(origin) if origin else None,
                           changes_per_km2=changes_per_km2, jpeg_quality=jpeg_quality)
    counts = ", ".join(f"{k} {v}" for k, v in files.counts.items())
    click.echo(f"{files.out_dir}: {len(files.sheets)} sheets per epoch; changes: {counts}")


@synthetic.command()
@click.argument("scene_dir", type=click.Path(file_okay=False))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for before.png and after.png.")
@click.option("--truth", is_flag=True, help="Draw the truth polygons, coloured by rule.")
@click.option("--max-px", type=int, default=800, show_default=True, help="Longest side of each preview, pixels.")
@click.option("--palette", is_flag=True, help="256-colour PNGs (smaller, for documentation).")
def preview(scene_dir, out_dir, truth, max_px, palette):
    """Write small before.png / after.png previews of SCENE_DIR."""
    before, after = preview_scene(scene_dir, out_dir, truth=truth, max_px=max_px, palette=palette)
    click.echo(f"wrote {before} and {after}")
