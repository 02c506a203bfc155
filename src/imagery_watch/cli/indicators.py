"""``imagery-watch indicators JOB_DIR``: the plan's figures and the report of a job.

Writes into ``--out`` (default ``JOB_DIR``): ``indicators.csv`` (one row per figure),
``indicators.json`` (the same, the city-wide headline, review progress, sample estimates
and the job's provenance) and ``report.html`` (one self-contained page).
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone

import click


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, ".10g")
    return v


def _csv_text(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _headline(records) -> dict:
    keep = ("patches", "m2", "mu", "ellipsoidal_m2", "ellipsoidal_mu", "rate", "target", "target_met")
    return {r["quantity"]: {k: r[k] for k in keep} for r in records
            if r["section"] == "indicators" and r["county"] == "City-wide"}


@click.command()
@click.argument("job_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for indicators.csv, indicators.json and report.html (default: JOB_DIR).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on the terminal.")
def indicators(job_dir, out_dir, quiet):
    """Indicators of the job in JOB_DIR against the plan's targets, and its report.

    Per county and city-wide: new construction on farmland (illegal, legal, pending, inside
    approved land), the violation rate (provisional upper bound and confirmed) against 1 %,
    afforestation against 9,320 mu and reclamation against 15,000 mu, from the patches and
    their review status; with estimates and 95 % intervals when a review sample was drawn
    (`imagery-watch review sample`).
    """
    from ..classes import M2_PER_MU
    from ..indicators import COLUMNS, compute_indicators
    from ..io.job_outputs import read_job_outputs, write_text
    from ..io.writers import ensure_dir, write_json
    from ..report import fmt_mu, fmt_rate, job_facts, render_report
    from ..sampling import estimate_from_sample

    job = read_job_outputs(job_dir)
    counties = job.counties if job.counties is not None else job.state.get("county_names")
    ind = compute_indicators(job.patches, counties=counties, rules=job.state.get("rules"))
    estimates = estimate_from_sample(job.patches, job.sample) if job.sample is not None else None
    out = ensure_dir(out_dir if out_dir is not None else job.root)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = job_facts(job.state, job_dir=str(job.root.resolve()), config_path=job.config_path)

    records = ind.records() + (estimates.table_rows() if estimates is not None else [])
    write_text(out / "indicators.csv", _csv_text(records, COLUMNS), encoding="utf-8-sig")
    write_json(out / "indicators.json", {
        "generated_at": now, "job": dict(facts), "targets": vars(ind.targets), "rules": ind.rules,
        "roles": {k: list(v) for k, v in vars(ind.roles).items()}, "counties": ind.counties,
        "headline": _headline(records), "progress": ind.progress,
        "sample": None if estimates is None else {**job.sample_info, **estimates.as_dict()},
        "indicators": records,
    })
    name = (job.state.get("job") or {}).get("name") or job.root.name
    html = render_report(ind, patches=job.patches, counties=job.counties, estimates=estimates,
                         sample_info=job.sample_info, facts=facts, config_text=job.config_text,
                         title=f"Change indicators: {name}", generated_at=now)
    write_text(out / "report.html", html)

    if not quiet:
        def word(met):
            return "not known yet" if met is None else "met" if met else "NOT met"

        p = ind.progress
        click.echo(f"{p['decided']:,} of {p['patches']:,} patches decided")
        for basis in ("provisional", "confirmed"):
            r = ind.row(f"violation_rate_{basis}")
            click.echo(f"violation rate, {basis:<11} {fmt_rate(r['rate']):>10}   "
                       f"target <= {100 * r['target']:g} %: {word(r['target_met'])}")
        for role in ("afforestation", "reclamation"):
            for basis in ("provisional", "confirmed"):
                r = ind.row(f"{role}_{basis}")
                click.echo(f"{role + ', ' + basis:<27} {fmt_mu(r['ellipsoidal_mu']):>10} mu   target >= "
                           f"{fmt_mu(r['target'])} mu: {word(r['target_met'])}")
        if estimates is not None:
            if estimates.problems:
                click.echo(f"review sample not used: {'; '.join(estimates.problems)}", err=True)
            else:
                e = estimates.estimates["illegal_farmland_m2"]
                ci = "" if math.isnan(e.se) else \
                    f" (95 % CI {fmt_mu(e.ci95_low / M2_PER_MU)} - {fmt_mu(e.ci95_high / M2_PER_MU)})"
                click.echo(f"estimated illegal farmland construction from the sample ({estimates.reviewed} of "
                           f"{estimates.sample_size} reviewed): {fmt_mu(e.value / M2_PER_MU)} mu{ci}")
        click.echo(f"wrote {out / 'indicators.csv'}, {out / 'indicators.json'} and {out / 'report.html'}")
