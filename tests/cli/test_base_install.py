"""The commands of ``make demo`` run with the base install alone (no ``review`` extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys

BLOCK_WEB_STACK = (
    "import sys\n"
    "for name in ('fastapi', 'uvicorn', 'jinja2', 'argon2', 'multipart', 'starlette'):\n"
    "    sys.modules[name] = None  # any import of these now fails, as without the extra\n"
    "from imagery_watch.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_indicators_run_without_the_review_extra(reference_job, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(reference_job.out_dir, job)
    proc = subprocess.run([sys.executable, "-c", BLOCK_WEB_STACK, "indicators", str(job), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (job / "report.html").stat().st_size > 1000
    assert (job / "indicators.csv").exists()


def test_review_serve_without_the_extra_names_the_install_command(reference_job):
    proc = subprocess.run([sys.executable, "-c", BLOCK_WEB_STACK, "review", "serve", str(reference_job.out_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "review" in proc.stderr and "pip install" in proc.stderr, proc.stderr
