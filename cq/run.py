"""One run of the workflow over a folder: what it covers, its start check and its close.

The Snakefile's hooks (rules/run.smk) and ``cq nightly`` share this one object, so that the
two never drift:

- :meth:`Run.plan`: the images found (cq.discover), their shards (cq.shards), and where each
  result's declared output and log lie.
- :meth:`Run.start`: in Snakemake's main process, before the DAG is built: cq's lock
  (cq.lock), then the record check (cq.freshness). The record decides, never mtimes: the
  declared output of every result whose record is not current (other image content, another
  job spec, a transient failure) is deleted, so Snakemake runs its job because its output is
  missing. In shard mode it then writes each shard's listing that changed (its manifests were
  deleted with the stale outputs). A dry run touches nothing and names them instead.
- :meth:`Run.begin` and :meth:`Run.close`: the history line, ``best/``, the report when no
  report job built it, ``.history/outcome.json`` and the summary (cq.outcome).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from cq import freshness, history, lock, outcome
from cq.config import Settings, unavailable
from cq.discover import Discovery, discover, report_warnings, result_path
from cq.shards import (SHARDS_FOLDER, assign_shards, listing_path, manifest_path, resolve_shard_size,
                       shard_listing, write_listing)

SHOWN = 50  # stale outputs a dry run names


@dataclass
class Run:
    settings: Settings
    found: Discovery
    shards: dict = field(default_factory=dict)  # shard name -> its images; {} for one job per image
    since_ns: int = 0  # the run's start mark (cq.history.mark_start), set by begin
    started: bool = False

    @classmethod
    def plan(cls, settings: Settings, *, warn: bool = False) -> Run:
        """The run over ``settings``; ``warn``: say on stderr what cannot run or was skipped."""
        s = settings
        found = discover(s.input_dir, s.extensions, exclude=[s.results_dir, s.logs_dir, s.benchmarks_dir, ".snakemake"])
        if warn:
            for reason in unavailable(s.methods):
                print(f"cq: warning: {reason}; its jobs will write error records", file=sys.stderr)
            report_warnings(found)
        size = resolve_shard_size(s.shard_size, len(found.images))
        return cls(settings, found, assign_shards(found.images, size) if size else {})

    @property
    def images(self) -> list[str]:
        return self.found.images

    @property
    def methods(self) -> list[str]:
        return list(self.settings.methods)

    def shard_of(self) -> dict[str, str]:
        return {image: shard for shard, images in self.shards.items() for image in images}

    def log_of(self, method: str, image: str, shard_of: dict | None = None) -> str | None:
        """The log of the job that makes (image, method): its own, or its shard's."""
        if not self.shards:
            return result_path(self.settings.logs_dir, method, image, ".log")
        shard = (shard_of or self.shard_of()).get(image)
        return f"{self.settings.logs_dir}/{SHARDS_FOLDER}/{method}/{shard}.log" if shard else None

    def stale(self, listings: dict | None = None) -> dict[str, str]:
        """Declared output -> why, for every result with a record that is not current (a
        missing record needs no forcing: its job runs anyway, except in shard mode), and the
        manifests of shards whose listing changed (``listings``: :meth:`_listings`, when known)."""
        s, shard_of, out = self.settings, self.shard_of(), {}
        for label, entry in s.methods.items():
            fp = freshness.spec_fingerprint(entry["spec"])
            pairs = [(f"{s.input_dir}/{image}", result_path(s.results_dir, label, image, ".png"),
                      result_path(s.results_dir, label, image, ".json"), fp) for image in self.images]
            for json_path, image_path, why in freshness.stale_outputs(pairs, refresh=True):
                image = image_path[len(s.input_dir) + 1:]
                if self.shards:
                    out.setdefault(manifest_path(s.results_dir, label, shard_of[image]), why)
                elif why != "no record":
                    out[json_path] = why
        for shard, text in (self._listings() if listings is None else listings).items():  # its jobs run again
            if text is not None:
                for label in s.methods:
                    out.setdefault(manifest_path(s.results_dir, label, shard), "its images changed")
        return out

    def _listings(self) -> dict[str, str | None]:
        """Shard -> the text of its listing, for each shard whose listing would be other now
        (None: there is none yet)."""
        texts = {shard: _text(listing_path(self.settings.results_dir, shard)) for shard in self.shards}
        return {shard: text for shard, text in texts.items() if text != shard_listing(self.shards[shard])}

    def _write_listings(self, listings: dict) -> None:
        """Each shard's listing that is missing or other (``listings``), written here rather than
        by a job of rule shard_listing (a process, ~0.35 CPU s each): Snakemake finds them
        present, and runs that rule only for a target asked for without this start check."""
        for shard in listings:
            write_listing(listing_path(self.settings.results_dir, shard), self.shards[shard])

    def start(self, *, execute: bool) -> None:
        """Once: when ``execute`` (a real run, not a dry run), take cq's lock (unless the parent
        holds it), create the history file the report reads, and delete the stale outputs;
        else only say how many there are."""
        if self.started:
            return
        self.started = True
        if not execute:
            stale = self.stale() if os.path.isdir(self.settings.results_dir) else {}
            for path, why in list(stale.items())[:SHOWN]:
                print(f"cq: not current, a real run redoes it: {path} ({why})", file=sys.stderr)
            if len(stale) > SHOWN:
                print(f"cq: ... and {len(stale) - SHOWN} more not current", file=sys.stderr)
            return
        lock.ensure(self.settings.results_dir)
        history.check_shrink(self.settings.results_dir, self.settings.input_dir, len(self.images),
                             self.settings.min_image_share)
        # The report's inputs are then the same from the first run on (its history file).
        open(os.path.join(self.settings.results_dir, history.HISTORY_FILE), "a").close()
        listings = self._listings()  # read once: for the stale manifests, then to write
        for path in self.stale(listings):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._write_listings(listings)  # after the deletions: a crash between leaves them to redo

    def begin(self, run_settings: dict) -> None:
        s = self.settings
        line = history.begin(s.results_dir, s.input_dir, self.images, self.methods, prune_deleted=s.prune_deleted,
                             other_dirs=(s.logs_dir, s.benchmarks_dir), settings=run_settings,
                             skipped=self.found.warnings)
        self.since_ns = line["since_ns"]

    def close(self, status: str, *, report_built: bool) -> dict:
        """best/, the history line (its status: ok, failed when every result of this run
        failed, incomplete when results are missing, error), the report unless the run's
        report job built it, and the summary, printed and returned."""
        s, shard_of = self.settings, self.shard_of()

        def finish(summary):
            return history.finish(s.results_dir, self.images, self.methods,
                                  status=outcome.status_of(summary, status))

        summary = outcome.conclude(s.results_dir, s.input_dir, self.images, self.methods,
                                   lambda m, i: self.log_of(m, i, shard_of), self.since_ns, finish=finish,
                                   skipped=self.found.warnings, report_built=report_built)
        outcome.print_summary(summary)
        return summary


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def run_settings(execution, dag) -> dict:
    """Snakemake's runtime settings in effect (its execution and DAG settings), for the run's
    history line: shows which profile a run used."""
    return {"keep_going": execution.keep_going, "latency_wait": execution.latency_wait,
            "rerun_incomplete": dag.force_incomplete,
            "rerun_triggers": sorted(str(getattr(t, "name", t)).lower() for t in dag.rerun_triggers),
            "forcerun": sorted(f for f in dag.forcerun if "/" not in f),
            "lock": "cq" if not execution.lock else "cq+snakemake"}
