"""Where a workflow job's messages go: its log file, and nowhere else.

A job's stderr is Snakemake's terminal; cq's logging (INFO, e.g. cnn training progress),
Python warnings and anything a library prints to stderr belong in the job's log file.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to(log_file) -> logging.Logger:
    """Send cq's logging (INFO and up), warnings and stderr to ``log_file``; return cq's logger."""
    sys.stderr = log_file
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("cq")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    return logger
