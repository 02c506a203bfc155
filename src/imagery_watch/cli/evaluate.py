"""``imagery-watch evaluate``: score a patch file against truth polygons."""

from __future__ import annotations

import click


@click.command()
@click.argument("patches", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--patches-layer", default="patches", show_default=True, help="Layer of the patches in PATCHES.")
@click.option("--truth-layer", default="truth", show_default=True,
              help="Layer of the truth polygons in TRUTH (each with a 'rule' column).")
@click.option("--min-overlap", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Fraction of a polygon's area that must be covered to count as a match.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics to this JSON file.")
def evaluate(patches, truth, patches_layer, truth_layer, min_overlap, json_out):
    """Compare PATCHES (GeoPackage) with TRUTH polygons (GeoPackage), per rule.

    A truth polygon is found when half its area is covered by patches of its rule; a
    patch is correct when half its area lies in truth polygons of its rule.
    """
    from ..evaluate import evaluate_patches, format_table
    from ..io.patches import read_patches
    from ..io.writers import write_json

    patches_gdf = read_patches(patches, layer=patches_layer)
    truth_gdf = read_patches(truth, layer=truth_layer)
    report = evaluate_patches(patches_gdf, truth_gdf, min_overlap=min_overlap)
    report["patches_path"] = str(patches)
    report["truth_path"] = str(truth)
    click.echo(format_table(report))
    if json_out:
        write_json(json_out, report)
        click.echo(f"metrics written to {json_out}")
