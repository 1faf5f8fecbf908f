"""What a person follows in the terminal during a run: one progress line, not Snakemake's listings.

Snakemake prints a block of a dozen lines for every job it starts and finishes (a 17-image
folder: 1,700 lines, one ``Reason:`` line of 6 KB). :class:`Follow` turns the same events into
one progress line: jobs done of all, failures so far, the time left (from the pace so far),
and what runs now with the last line of its log (a cnn job's epoch and score), refreshed every
few seconds. On a terminal the line is rewritten in place; in a log file (cron, systemd) it is
written as a new line at every tenth of the run, and between them when there is news after
``every_s`` seconds or a quarter of the time so far (whichever is longer): ten hours of
epochs make about 30 lines, not 7,000. Warnings and errors pass through as they come, one line each where
they are one line; the grouped failures are cq's end-of-run summary (cq.outcome).

:func:`brief` puts it between Snakemake and the terminal, from the workflow's ``onstart``: a
standard ``logging`` filter on Snakemake's terminal handler, so any ``snakemake`` command gets
it (no logger plugin, which Snakemake cannot find in an editable install) and the run's log
file under ``.snakemake/log`` keeps every line. No Snakemake import here.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote

# A job log's line: "2026-01-02 03:04:05,678 INFO cq.methods.cnn: cnn coffee: epoch 12, ...".
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)? [A-Z]+ [\w.]+: (.*)$")
WIDTH = 160  # the most a progress line takes (a terminal line; a log line stays readable)
PEEK_S = 5.0  # how often the running jobs' logs are read for news (a cnn epoch)
# Plain Snakemake messages (no event) that still say something to a person; the rest of its
# INFO chatter (building the DAG, cores, "Select jobs to execute...") is left out.
KEEP = ("Nothing to be done", "Complete log", "Will exit after finishing", "Exiting because",
        "Shutting down", "Terminating")


@dataclass
class Job:
    what: str
    log: str | None
    started: float
    news: str | None = None


def describe(rule: str, wildcards: dict) -> str:
    """A job as a person names it: "kmeans on photos/a.jpg", "octree, shard 0003", "the report"."""
    if rule == "quantize" and "method" in wildcards:  # the key decoded (cq.discover.result_key)
        return f"{wildcards['method']} on {unquote(wildcards.get('key', '?'))}"
    if rule == "quantize_shard" and "method" in wildcards:
        return f"{wildcards['method']}, shard {wildcards.get('shard', '?')}"
    if rule == "report":
        return "the report"
    return rule


def last_log_line(path: str | None, limit: int = 4096) -> str | None:
    """The last non-empty line of a job's log, its timestamp and logger name left out."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return None
    if not lines:
        return None
    found = _LOG_LINE.match(lines[-1])
    return found.group(1) if found else lines[-1]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Follow:
    """Snakemake's job events in, progress lines out through ``write`` (a text stream's write).

    ``tty``: rewrite one line in place; else print a line at each tenth of the run, or after
    ``every_s`` seconds when something changed. ``clock`` is injectable for tests.
    """

    def __init__(self, write, *, tty: bool, every_s: float = 30.0, clock=time.monotonic):
        self.write, self.tty, self.every_s, self.clock = write, tty, every_s, clock
        self.jobs: dict[int, Job] = {}
        self.done = self.total = self.failed = 0
        self.began: float | None = None
        self.shown_tenth, self.shown_at, self.shown = -1, clock(), ""
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ events
    def job_started(self, jobid: int, rule: str, wildcards: dict, log: list | None) -> None:
        with self.lock:
            now = self.clock()
            self.began = now if self.began is None else self.began
            self.jobs[jobid] = Job(describe(rule, wildcards or {}), (log or [None])[0], now)
            self._show()

    def job_finished(self, jobid: int) -> None:
        with self.lock:
            self.jobs.pop(jobid, None)

    def job_failed(self, jobid: int) -> None:
        with self.lock:
            job = self.jobs.pop(jobid, None)
            self.failed += 1
            where = f" (log: {job.log})" if job and job.log else ""
            self.message(f"cq: job failed: {job.what if job else f'job {jobid}'}{where}")

    def progress(self, done: int, total: int) -> None:
        with self.lock:
            self.done, self.total = done, total
            self._show(force=done >= total)
            if done >= total:
                self.close()  # the run's last line stays; what follows starts on its own

    def message(self, text: str) -> None:
        """A message that is not progress (a warning, an error): on its own line(s), kept."""
        with self.lock:
            self._clear()
            self.write(text.rstrip("\n") + "\n")
            if self.tty and self.shown:
                self.write(self.shown)

    def tick(self) -> None:
        """Read the running jobs' logs again; show the line when it changed (called every few s)."""
        with self.lock:
            changed = False
            for job in self.jobs.values():
                news = last_log_line(job.log)
                changed |= news != job.news
                job.news = news
            if changed:
                self._show()

    def close(self) -> None:
        """End the run's line (a terminal's cursor goes to a new line)."""
        with self.lock:
            if self.tty and self.shown:
                self.write("\n")
            self.shown = ""

    # ------------------------------------------------------------------ the line
    def line(self) -> str:
        parts = [f"cq: {self.done} of {self.total} jobs done" if self.total else "cq: started"]
        if self.failed:
            parts[0] += f", {self.failed} failed"
        left = self.time_left()
        if left is not None:
            parts.append(f"about {duration(left)} left")
        if self.jobs:
            oldest = min(self.jobs.values(), key=lambda j: j.started)
            running = f"running: {oldest.what}" + (f" and {len(self.jobs) - 1} more" if len(self.jobs) > 1 else "")
            running += f" ({duration(self.clock() - oldest.started)})"
            parts.append(running + (f": {oldest.news}" if oldest.news else ""))
        text = " · ".join(parts)
        return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"

    def time_left(self) -> float | None:
        """From the pace so far: elapsed / done x jobs left (None before two jobs are done)."""
        if self.began is None or self.done < 2 or self.total <= self.done:
            return None
        return (self.clock() - self.began) / self.done * (self.total - self.done)

    def _show(self, force: bool = False) -> None:
        text, now = self.line(), self.clock()
        if self.tty:
            if text != self.shown:
                self.write("\r\033[K" + text)
                self.shown = text
            return
        tenth = 10 * self.done // self.total if self.total else 0
        # news between tenths: after every_s, or a quarter of the time so far when longer, so
        # that ten hours write about 30 lines
        wait = max(self.every_s, (now - self.began) / 4 if self.began is not None else 0.0)
        if force or tenth > self.shown_tenth or (now - self.shown_at >= wait and text != self.shown):
            self.write(text + "\n")
            self.shown, self.shown_tenth, self.shown_at = text, max(tenth, self.shown_tenth), now

    def _clear(self) -> None:
        if self.tty and self.shown:
            self.write("\r\033[K")


class Brief(logging.Filter):
    """A filter on Snakemake's terminal handler: its job events feed a :class:`Follow` on the
    handler's stream, warnings and errors and the messages in :data:`KEEP` become lines of
    their own, the rest is dropped. The logger's other handlers (its log file) see everything."""

    def __init__(self, handler: logging.StreamHandler):
        super().__init__()
        self.handler = handler
        stream = handler.stream
        self.follow = Follow(stream.write, tty=bool(getattr(stream, "isatty", lambda: False)()))
        self.stopped = threading.Event()
        threading.Thread(target=self._peek, name="cq-progress", daemon=True).start()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._brief(record)
            self.handler.flush()
        except Exception:  # noqa: BLE001 (a progress line must never stop a run: shown as is)
            return True
        return False

    def _brief(self, record: logging.LogRecord) -> None:
        event = getattr(getattr(record, "event", None), "value", None)  # a LogEvent's name
        if event == "progress":
            self.follow.progress(record.done, record.total)
        elif event == "job_info":
            self.follow.job_started(record.jobid, record.rule_name, record.wildcards, record.log)
        elif event == "job_finished":
            self.follow.job_finished(record.job_id)
        elif event == "job_error":
            self.follow.job_failed(record.jobid)
        elif record.levelno >= logging.WARNING:  # a warning, or an error Snakemake stops on
            self.follow.message(self.handler.format(record))
        elif event is None and str(record.msg or "").startswith(KEEP):
            self.follow.message(record.getMessage())

    def _peek(self) -> None:
        while not self.stopped.wait(PEEK_S):
            self.follow.tick()
            self.handler.flush()

    def close(self) -> None:
        """End the progress line (before the run's summary) and stop reading job logs."""
        self.stopped.set()
        self.follow.close()
        self.handler.flush()

    def remove(self) -> None:
        """Snakemake's own output from now on."""
        self.stopped.set()
        self.handler.removeFilter(self)


def brief(logger: logging.Logger, mode: str) -> Brief | None:
    """:class:`Brief` on ``logger``'s terminal handler (Snakemake's, ``snakemake.logging``),
    unless Snakemake's full output is asked for: ``mode`` ``full`` (the ``terminal`` setting),
    ``CQ_TERMINAL=full``, or ``--verbose``; or a logger plugin writes to the terminal instead."""
    if mode == "full" or os.environ.get("CQ_TERMINAL") == "full" or logger.getEffectiveLevel() < logging.INFO:
        return None
    terminal = [h for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    if len(terminal) != 1 or any(isinstance(f, Brief) for f in terminal[0].filters):
        return None
    shown = Brief(terminal[0])
    terminal[0].addFilter(shown)
    return shown
