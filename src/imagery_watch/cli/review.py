"""``imagery-watch review``: serve a job's patches to reviewers, manage accounts, export.

    imagery-watch review serve JOB_DIR [--host 127.0.0.1] [--port 8000]
    imagery-watch review users add NAME --role reviewer|admin [--job JOB_DIR] [--password-file F]
    imagery-watch review users list [--job JOB_DIR]
    imagery-watch review users disable NAME [--job JOB_DIR]
    imagery-watch review export JOB_DIR --out DIR [--csv] [--gpkg] [--sheets] [filters]

The ``users`` commands act on the job folder given by ``--job`` (default: the current
folder), so ``users add NAME --role reviewer`` works when run inside the job folder.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

import click

#: modules the review server needs beyond the base install -> the package that provides them
REVIEW_EXTRA = {"fastapi": "fastapi", "uvicorn": "uvicorn", "jinja2": "jinja2", "argon2": "argon2-cffi",
                "multipart": "python-multipart"}

_job_option = click.option("--job", "-j", "job_dir", type=click.Path(file_okay=False, exists=True), default=".",
                           show_default=True, help="The job folder (holds job.json and patches.gpkg).")


def _filter_options(f):
    for opt in reversed([
        click.option("--county", help="Only this county."),
        click.option("--rule", help="Only this rule."),
        click.option("--status", type=click.Choice(["pending", "illegal", "legal", "false_alarm", "field_visit"]),
                     help="Only this status."),
        click.option("--score-min", type=float), click.option("--score-max", type=float),
        click.option("--area-min", type=float, help="Minimum area, m2."),
        click.option("--area-max", type=float, help="Maximum area, m2."),
    ]):
        f = opt(f)
    return f


def require_review_extra(*modules: str) -> None:
    """Fail with the install command when a package of the ``review`` extra is missing.

    Parameters
    ----------
    *modules : str
        Keys of :data:`REVIEW_EXTRA` to check (default: all).
    """
    missing = [pkg for mod, pkg in REVIEW_EXTRA.items()
               if (not modules or mod in modules) and importlib.util.find_spec(mod) is None]
    if missing:
        raise click.ClickException(f"the review needs {', '.join(missing)}, which this installation lacks; install "
                                   "the review extra: pip install -e '.[review]' (in the repository) or "
                                   "pip install 'imagery-watch[review]'")


def _user_store(job_dir):
    require_review_extra("argon2")
    from ..review.job import open_job
    from ..review.users import UserStore

    return UserStore(open_job(job_dir).users_path)


@click.group()
def review() -> None:
    """Review patches in a browser: decisions, accounts, exports."""


@review.command()
@click.argument("job_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 serves every interface of the intranet.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--session-hours", type=float, default=8.0, show_default=True, help="Lifetime of a login session.")
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (when served behind an HTTPS proxy).")
def serve(job_dir, host, port, session_hours, secure_cookies):
    """Serve the patches of JOB_DIR to reviewers."""
    require_review_extra()
    import uvicorn

    from ..review.app import create_app

    app = create_app(job_dir, session_ttl_s=session_hours * 3600, secure_cookies=secure_cookies)
    if not app.state.users.list():
        click.echo("No accounts yet: add one with\n  imagery-watch review users add NAME --role admin "
                   f"--job {job_dir}", err=True)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    where = "this computer only" if loopback else "other computers on the network too"
    click.echo(f"Serving {Path(job_dir).resolve()} on http://{host}:{port}/ ({where}; "
               f"{'use --host 0.0.0.0 to serve the intranet' if loopback else 'bound as told by --host'}). "
               "Ctrl+C stops.")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


@review.group()
def users() -> None:
    """Reviewer and admin accounts of a job folder (kept in JOB_DIR/review.sqlite)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["reviewer", "admin"]), default="reviewer", show_default=True)
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True),
              help="Read the password from the first line of this file instead of asking.")
@_job_option
def users_add(name, role, password_file, job_dir):
    """Add the account NAME (asks for the password)."""
    from ..review.users import read_password_file

    store = _user_store(job_dir)
    if password_file:
        password = read_password_file(password_file)
    else:
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    store.add(name, password, role=role)
    click.echo(f"added {role} {name}")


@users.command("list")
@_job_option
def users_list(job_dir):
    """List the accounts."""
    rows = _user_store(job_dir).list()
    if not rows:
        click.echo("no accounts")
    for u in rows:
        click.echo(f"{u.name:<24}{u.role:<10}{'disabled' if u.disabled else 'active'}")


@users.command("disable")
@click.argument("name")
@_job_option
def users_disable(name, job_dir):
    """Disable the account NAME and end its sessions."""
    _user_store(job_dir).disable(name)
    click.echo(f"disabled {name}")


@review.command()
@click.argument("job_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for the exports.")
@click.option("--csv/--no-csv", "want_csv", default=True, show_default=True,
              help="decisions.csv and decision_log.csv")
@click.option("--gpkg/--no-gpkg", "want_gpkg", default=True, show_default=True, help="decisions.gpkg")
@click.option("--sheets", is_flag=True, help="Also an evidence sheet (PNG) per patch, in evidence/.")
@_filter_options
def export(job_dir, out_dir, want_csv, want_gpkg, sheets, county, rule, status, score_min, score_max, area_min,
           area_max):
    """Export the decisions of JOB_DIR (CSV, GeoPackage, evidence sheets)."""
    require_review_extra("argon2")
    from ..io.writers import ensure_dir
    from ..review.export import (decision_log_csv, decisions_csv, evidence_png, write_decisions_gpkg)
    from ..review.job import open_job
    from ..review.store import PatchFilter, PatchStore

    job = open_job(job_dir)
    store = PatchStore(job.patches_path)
    flt = PatchFilter(county=county, rule=rule, status=status, score_min=score_min, score_max=score_max,
                      area_min_m2=area_min, area_max_m2=area_max)
    out = ensure_dir(out_dir)
    if want_csv:
        (out / "decisions.csv").write_text(decisions_csv(store, job, flt), encoding="utf-8-sig")
        (out / "decision_log.csv").write_text(decision_log_csv(store), encoding="utf-8-sig")
        click.echo(f"wrote {out / 'decisions.csv'} and {out / 'decision_log.csv'}")
    if want_gpkg:
        n = write_decisions_gpkg(store, job, out / "decisions.gpkg", flt)
        click.echo(f"wrote {n} patches to {out / 'decisions.gpkg'} (layer decisions)")
    if sheets:
        folder = ensure_dir(out / "evidence")
        n = 0
        for p in store.iter_patches(flt, geometry=False):
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(p["patch_id"]))
            (folder / f"{name}.png").write_bytes(evidence_png(store, job, p["patch_id"]))
            n += 1
        click.echo(f"wrote {n} evidence sheets to {folder}")


from .sample import sample as _sample  # noqa: E402  (defined in its own module: the review sample of issue 5)
review.add_command(_sample)
