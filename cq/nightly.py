"""``cq nightly``: one command for an unattended run over a folder that changes.

    cq nightly --workflow /opt/cq --config input_dir=/data/photos results_dir=/data/cq [-- SNAKEMAKE ARGS]

The workflow (its Snakefile, profiles/nightly and config/) is ``--workflow``, else
``$CQ_WORKFLOW``, else the working directory when it holds a Snakefile.

1. Checks the settings (cq.config.load, as the Snakefile does), then takes cq's lock on the
   results folder (cq/lock.py). A live run elsewhere refuses this one in one line (exit 75, "try again
   later"); a dead one's lock is already free, since the kernel drops it with its holder.
2. Runs Snakemake under that lock, with the nightly workflow profile and ``--nolock``. The
   lock file descriptor is passed down, so the lock stays held while Snakemake lives, even if
   this process is killed. Why ``--nolock`` is safe: Snakemake's lock guards one working
   directory's outputs against a second Snakemake there; every output of this workflow
   (results, logs, benchmarks) is tied to the results folder, which cq's lock guards whatever
   the working directory, and Snakemake's per-output metadata in ``.snakemake`` is keyed by
   output path, which only the lock holder writes. Snakemake's lock could only add what the
   issue reports: a stale lock after a crash, and another run's unlock deleting a live one's.
   ``--config k=16`` is passed on as ``colors=16``: Snakemake's ``--config`` refuses one-letter keys.
3. Snakemake runs no report job (``--omit-from report``): the end-of-run hook builds the report
   over the records present plus the missing ones with their reason, atomically over the
   previous page. When the hooks did not run (nothing to do: Snakemake calls them only when a
   job runs; or Snakemake died), the run is closed here: history line, ``best/``, report.
4. Exits 0 when the run succeeded, 1 when a job died, a result is missing or every result of
   the run failed, 2 on bad settings (one line, nothing written), 75 when another run holds the lock.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from cq import history, lock, outcome
from cq.config import ConfigError, load
from cq.run import Run

WORKFLOW_ENV = "CQ_WORKFLOW"
DRY_RUN = {"-n", "--dry-run", "--dryrun"}
EX_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; cron may simply try the next night


def parse_args(argv):
    p = argparse.ArgumentParser(prog="cq nightly", description=(
        "One command for an unattended run over a folder that changes: only new or changed images, "
        "a report whatever fails, best/ kept current, one history line per run. Exit status: 0 done, "
        "1 a result missing or every result failed, 2 bad settings, 75 another run holds the results folder."))
    p.add_argument("--workflow", "-w", default=os.environ.get(WORKFLOW_ENV),
                   help=f"the cq workflow's folder (default: ${WORKFLOW_ENV}, else here)")
    p.add_argument("--directory", "-d", default=".", help="Snakemake's working directory (default: here)")
    p.add_argument("--configfile", nargs="+", default=[], help="config files (default: config/config.yaml)")
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--cores", default="all")
    p.add_argument("--accept-fewer", action="store_true",
                   help="run even when input_dir holds far fewer images than last night (min_image_share=0)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: passed to Snakemake")
    args = p.parse_args(argv)
    if args.snakemake_args[:1] == ["--"]:
        args.snakemake_args = args.snakemake_args[1:]
    if args.accept_fewer:
        args.config.append("min_image_share=0")
    return args


def workflow_dir(given: str | None) -> Path:
    """The workflow's folder: ``given`` (--workflow or $CQ_WORKFLOW), else the working directory."""
    folder = Path(given or ".").resolve()
    if not (folder / "Snakefile").is_file():
        raise ConfigError(f"no cq workflow (Snakefile) in {str(folder)!r}; give --workflow DIR or set {WORKFLOW_ENV}")
    return folder


def load_config(workflow: Path, workdir: Path, configfiles, overrides) -> tuple[dict, list[str]]:
    """The merged config (files, then KEY=VALUE overrides parsed as YAML) and the config files
    to hand to Snakemake (the workflow's default when none is given and the working
    directory has no config/config.yaml)."""
    files = [str(Path(f).resolve()) for f in configfiles]
    if not files and not (workdir / "config/config.yaml").exists():
        files = [str(workflow / "config/config.yaml")]
    config = {}
    for f in files or [str(workdir / "config/config.yaml")]:
        with open(f, encoding="utf-8") as fh:
            config.update(yaml.safe_load(fh) or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--config: expected KEY=VALUE, got {item!r}")
        config["colors" if key == "k" else key] = yaml.safe_load(value)  # as Snakemake gets it
    return config, files


def snakemake_command(args, files, workflow: Path, workdir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "-s", str(workflow / "Snakefile"),
           "--directory", str(workdir),
           "--workflow-profile", str(workflow / "profiles/nightly"), "--nolock", "--cores", str(args.cores),
           # The report is built by the end-of-run hook (cq.outcome), not by a job: Snakemake
           # deletes a job's outputs before it runs, which took the page away for seconds
           # (for good, if the run was killed then), and skips the job when another one died.
           "--omit-from", "report"]
    if files:
        cmd += ["--configfile", *files]
    if args.config:  # Snakemake's --config refuses one-letter keys: k is passed as colors
        cmd += ["--config", *(f"colors={item[2:]}" if item.startswith("k=") else item for item in args.config)]
    return cmd + list(args.snakemake_args)


def run_snakemake(cmd: list[str], held: lock.RunLock) -> int:
    """Run Snakemake holding ``held`` (its descriptor is inherited); forward SIGTERM/SIGINT."""
    env = {**os.environ, outcome.REPORT_ENV: "cq"}
    child = subprocess.Popen(cmd, env=env, pass_fds=(held.fd,))

    def forward(signum, frame):
        child.send_signal(signum)
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def close(run: Run, since_ns: int, status: str, *, begun: bool) -> dict:
    """A run whose end-of-run hooks did not run: Snakemake found nothing to do (hooks only run
    when a job does), or it died. Closed here as the hooks would (cq.run.Run.close); this
    run's results are those written since ``since_ns``, the mark taken before Snakemake started."""
    if not begun:
        run.begin({"lock": "cq", "by": "cq nightly"})
    run.since_ns = since_ns
    return run.close(status, report_built=False)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        workflow, workdir = workflow_dir(args.workflow), Path(args.directory).resolve()
        config, files = load_config(workflow, workdir, args.configfile, args.config)
        os.chdir(workdir)
        settings = load(config, workflow / "config/schema.yaml")
    except (OSError, yaml.YAMLError, ConfigError) as e:
        print(f"cq: error: {e}", file=sys.stderr)
        return 2
    try:
        held = lock.acquire(settings.results_dir)
    except lock.LockedError as e:
        print(str(e), file=sys.stderr)
        return EX_LOCKED
    except lock.LockError as e:
        print(str(e), file=sys.stderr)
        return 2
    with held:
        os.environ.update(held.child_env())  # this run's id and lock, for this process and Snakemake
        planned, dry = Run.plan(settings), bool(DRY_RUN.intersection(args.snakemake_args))
        try:
            if not dry:
                history.check_shrink(settings.results_dir, settings.input_dir, len(planned.images),
                                     settings.min_image_share)
        except history.ShrunkError as e:
            print(str(e), file=sys.stderr)
            return 2
        since_ns = history.mark_start(settings.results_dir)  # what is written from now on is this night's
        rc = run_snakemake(snakemake_command(args, files, workflow, workdir), held)
        return rc if dry else after_snakemake(planned, held.owner["token"], since_ns, rc)


def after_snakemake(run: Run, token: str, since_ns: int, rc: int) -> int:
    """The exit status once Snakemake is over, the run closed here when its hooks did not
    close it (nothing to do, or Snakemake died). This run's history line, outcome and
    progress are told from an earlier run's by its id (``token``), never by time."""
    results = run.settings.results_dir
    if history.ended(results, token):  # the hooks ran, but the disk was full: the line waits
        print("cq: the run ended on a full disk: its history line is kept for the next run", file=sys.stderr)
        return 1
    summary, current = outcome.read_outcome(results), history.in_progress(results)
    begun = current is not None and current.get("id") == token  # its onstart ran, its end did not
    if summary is None or summary.get("run") != token:  # the hooks did not run
        if rc > 0 and not begun:
            print(f"cq: snakemake stopped before the run started (exit {rc}); nothing was done", file=sys.stderr)
            return 1
        status = "ok" if rc == 0 else f"killed (signal {-rc})" if rc < 0 else f"error (exit {rc})"
        summary = close(run, since_ns, status, begun=begun)
    return outcome.exit_status(summary, rc)


if __name__ == "__main__":
    sys.exit(main())
