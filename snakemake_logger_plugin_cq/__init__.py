"""Snakemake logger plugin ``cq``: a progress line a person can follow (cq.terminal), instead of
Snakemake's dozen lines per job. ``cq nightly`` enables it (``--logger cq``, with the checkout
on Snakemake's PYTHONPATH: Snakemake finds logger plugins by module name on its path, never in
an editable install); a plain run: ``PYTHONPATH=$PWD snakemake --logger cq``.

Snakemake's own output is one flag away: ``--logger-cq-full`` (or ``CQ_TERMINAL=full`` in
the environment) hands every record to Snakemake's default handler, as without the plugin.
A dry run always gets Snakemake's listing: it is the answer to "what would run, and why".

No ``from __future__ import annotations`` here: Snakemake reads the settings' field types as
classes to build their command-line options (a string type stops every Snakemake start).
"""


import logging
import os
import sys
import threading
from dataclasses import dataclass, field

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from cq.terminal import Follow

PEEK_S = 5.0  # how often the running jobs' logs are read for news (a cnn epoch)
# Plain Snakemake messages (no event) that still say something to a person; the rest of its
# INFO chatter (building the DAG, cores, "Select jobs to execute...") is left out.
KEEP = ("Nothing to be done", "Complete log", "Will exit after finishing", "Exiting because",
        "Shutting down", "Terminating")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    full: bool = field(default=False, metadata={
        "help": "Snakemake's full output (every job's rule, wildcards, reason) instead of cq's "
                "progress line"})


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

        c = self.common_settings
        stream = sys.stdout if c.stdout else sys.stderr
        self.default = ColorizingTextHandler(nocolor=c.nocolor, stream=stream)
        self.default.addFilter(DefaultFilter(c.quiet, c.debug_dag, c.verbose, c.dryrun, c.printshellcmds))
        self.default.setFormatter(DefaultFormatter(c.quiet, c.show_failed_logs))
        full = bool(self.settings and self.settings.full) or os.environ.get("CQ_TERMINAL") == "full"
        self.full = full or c.dryrun or c.verbose or c.debug_dag
        self.follow = Follow(stream.write, tty=bool(getattr(stream, "isatty", lambda: False)()))
        self.stream = stream
        self.stopped = threading.Event()
        if not self.full:
            threading.Thread(target=self._peek, name="cq-progress", daemon=True).start()

    def _peek(self) -> None:
        while not self.stopped.wait(PEEK_S):
            self.follow.tick()
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self.full:
            self.default.handle(record)
            return
        try:
            self._brief(record)
            self.stream.flush()
        except Exception:  # noqa: BLE001 (a progress line must never stop a run)
            self.handleError(record)

    def _brief(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.PROGRESS:
            self.follow.progress(record.done, record.total)
        elif event == LogEvent.JOB_INFO:
            self.follow.job_started(record.jobid, record.rule_name, record.wildcards, record.log)
        elif event == LogEvent.JOB_FINISHED:
            self.follow.job_finished(record.job_id)
        elif event == LogEvent.JOB_ERROR:
            self.follow.job_failed(record.jobid)
        elif event is None and record.levelno >= logging.WARNING:
            self.follow.message(self.default.format(record))
        elif event is None and str(record.msg or "").startswith(KEEP):
            self.follow.message(record.getMessage())

    def close(self) -> None:
        self.stopped.set()
        self.follow.close()
        super().close()

    # What Snakemake asks of a log handler: to the terminal, filtered and formatted here.
    writes_to_stream = True
    writes_to_file = False
    has_filter = True
    has_formatter = True
    needs_rulegraph = False
