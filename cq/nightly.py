"""``cq nightly``: one command for an unattended run over a folder that changes.

    python -m cq.nightly --config input_dir=/data/photos results_dir=/data/cq [-- SNAKEMAKE ARGS]

1. Checks the settings (cq/guards.py), then takes cq's lock on the results folder
   (cq/lock.py). A live run elsewhere refuses this one in one line (exit 75, "try again
   later"); a dead one's lock is already free, since the kernel drops it with its holder.
2. Runs Snakemake under that lock, with the nightly workflow profile and ``--nolock``. The
   lock file descriptor is passed down, so the lock stays held while Snakemake lives, even if
   this process is killed. Why ``--nolock`` is safe: Snakemake's lock guards one working
   directory's outputs against a second Snakemake there; every output of this workflow
   (results, logs, benchmarks) is tied to the results folder, which cq's lock guards whatever
   the working directory, and Snakemake's per-output metadata in ``.snakemake`` is keyed by
   output path, which only the lock holder writes. Snakemake's lock could only add what the
   issue reports: a stale lock after a crash, and another run's unlock deleting a live one's.
3. Snakemake runs no report job (``--omit-from report``): the end-of-run hook builds the report
   over the records present plus the missing ones with their reason, atomically over the
   previous page. When the hooks did not run (nothing to do: Snakemake calls them only when a
   job runs; or Snakemake died), the run is closed here: history line, ``best/``, report.
4. Exits 0 when the run succeeded, 1 when a job died, a result is missing or every result of
   the run failed, 2 on bad settings, 75 when another run holds the lock.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cq import guards, lock, outcome

REPO = Path(__file__).resolve().parents[1]
DRY_RUN = {"-n", "--dry-run", "--dryrun"}
EX_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; cron may simply try the next night


def parse_args(argv):
    p = argparse.ArgumentParser(prog="cq nightly", description=__doc__.splitlines()[0])
    p.add_argument("--directory", "-d", default=".", help="Snakemake's working directory (default: here)")
    p.add_argument("--configfile", nargs="+", default=[], help="config files (default: config/config.yaml)")
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--cores", default="all")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: passed to Snakemake")
    args = p.parse_args(argv)
    if args.snakemake_args[:1] == ["--"]:
        args.snakemake_args = args.snakemake_args[1:]
    return args


def load_config(workdir: Path, configfiles, overrides) -> tuple[dict, list[str]]:
    """The merged config (files, then KEY=VALUE overrides parsed as YAML) and the config files
    to hand to Snakemake (the repository's default when none is given and the working
    directory has no config/config.yaml)."""
    files = [str(Path(f).resolve()) for f in configfiles]
    if not files and not (workdir / "config/config.yaml").exists():
        files = [str(REPO / "config/config.yaml")]
    config = {}
    for f in files or [str(workdir / "config/config.yaml")]:
        with open(f, encoding="utf-8") as fh:
            config.update(yaml.safe_load(fh) or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise guards.SettingsError(f"--config: expected KEY=VALUE, got {item!r}")
        config[key] = yaml.safe_load(value)
    return config, files


def folders(config: dict) -> dict[str, str]:
    """input, results, logs and benchmarks folders as the workflow sees them (relative to the
    working directory, where this process runs too, so that records name images alike)."""
    results = os.path.normpath(config["results_dir"])
    return {"input_dir": os.path.normpath(config["input_dir"]), "results_dir": results,
            "logs_dir": os.path.normpath(config.get("logs_dir") or os.path.join(results, "logs")),
            "benchmarks_dir": os.path.normpath(config.get("benchmarks_dir") or os.path.join(results, "benchmarks"))}


def snakemake_command(args, files, workdir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "-s", str(REPO / "Snakefile"),
           "--directory", str(workdir),
           "--workflow-profile", str(REPO / "profiles/nightly"), "--nolock", "--cores", str(args.cores),
           # The report is built by the end-of-run hook (cq.outcome), not by a job: Snakemake
           # deletes a job's outputs before it runs, which took the page away for seconds
           # (for good, if the run was killed then), and skips the job when another one died.
           "--omit-from", "report"]
    if files:
        cmd += ["--configfile", *files]
    if args.config:
        cmd += ["--config", *args.config]
    return cmd + list(args.snakemake_args)


def run_snakemake(cmd: list[str], held: lock.RunLock) -> int:
    """Run Snakemake holding ``held`` (its descriptor is inherited); forward SIGTERM/SIGINT."""
    env = {**os.environ, lock.TOKEN_ENV: held.owner["token"], outcome.REPORT_ENV: "cq"}
    child = subprocess.Popen(cmd, env=env, pass_fds=(held.fd,))

    def forward(signum, frame):
        child.send_signal(signum)
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def close_run(config: dict, dirs: dict, since: float, status: str, *, begun: bool) -> dict:
    """A run whose end-of-run hooks did not run: Snakemake found nothing to do (hooks only run
    when a job does), or it died. The history line, best/ and the report, from here."""
    from cq import history
    from cq.discover import discover, result_path

    found = discover(dirs["input_dir"], config.get("extensions") or (),
                     exclude=[dirs["results_dir"], dirs["logs_dir"], dirs["benchmarks_dir"], ".snakemake"])
    methods = list(config["methods"])
    if not begun:
        history.begin(dirs["results_dir"], dirs["input_dir"], found.images, methods,
                      prune_deleted=bool(config.get("prune_deleted", False)),
                      other_dirs=(dirs["logs_dir"], dirs["benchmarks_dir"]),
                      settings={"lock": "cq", "by": "cq nightly"}, skipped=found.warnings)

    def finish(summary):
        return history.finish(dirs["results_dir"], found.images, methods, status=outcome.status_of(summary, status))

    summary = outcome.conclude(dirs["results_dir"], dirs["input_dir"], found.images, methods,
                               lambda m, i: result_path(dirs["logs_dir"], m, i, ".log"), since,
                               report_built=False, finish=finish, skipped=found.warnings)
    outcome.print_summary(summary)
    return summary


def _ended_since(run: dict, since: float) -> bool:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(run.get("end"))).timestamp() >= since - 1
    except ValueError:
        return False


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(args.directory).resolve()
    try:
        config, files = load_config(workdir, args.configfile, args.config)
        os.chdir(workdir)
        dirs = folders(config)
        guards.check_config({**config, **dirs}, dirs["logs_dir"], dirs["benchmarks_dir"])
    except (OSError, KeyError, yaml.YAMLError, guards.SettingsError) as e:
        print(f"cq: error: {e if not isinstance(e, KeyError) else f'config: {e} is not set'}", file=sys.stderr)
        return 2
    try:
        held = lock.acquire(dirs["results_dir"])
    except lock.LockedError as e:
        print(str(e), file=sys.stderr)
        return EX_LOCKED
    with held:
        since = time.time()
        rc = run_snakemake(snakemake_command(args, files, workdir), held)
        if DRY_RUN.intersection(args.snakemake_args):
            return rc
        from cq.history import in_progress
        summary, run = outcome.read_outcome(dirs["results_dir"]), in_progress(dirs["results_dir"])
        if run and _ended_since(run, since):  # the hooks ran, but the disk was full: the line waits
            print("cq: the run ended on a full disk: its history line is kept for the next run",
                  file=sys.stderr)
            return 1
        if summary is None or summary.get("end", 0) < since:  # the hooks did not run
            if rc > 0 and (run is None or run.get("end")):
                print(f"cq: snakemake stopped before the run started (exit {rc}); nothing was done",
                      file=sys.stderr)
                return 1
            status = "ok" if rc == 0 else f"killed (signal {-rc})" if rc < 0 else f"error (exit {rc})"
            begun = run is not None and not run.get("end")  # this run's onstart ran, its end did not
            summary = close_run(config, dirs, since, status, begun=begun)
    return outcome.exit_status(summary, rc)


if __name__ == "__main__":
    sys.exit(main())
