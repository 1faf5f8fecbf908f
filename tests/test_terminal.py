"""The terminal a person follows (cq.terminal): one progress line with N of M and the time
left, news from inside running jobs, failures and warnings on their own lines, few lines in a
log file, and the logging filter on Snakemake's terminal handler that feeds it."""

from __future__ import annotations

import io
import logging

import pytest

from cq.terminal import Follow, describe, last_log_line


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def follow(tty=False):
    out, clock = io.StringIO(), Clock()
    return Follow(out.write, tty=tty, every_s=30, clock=clock), out, clock


def test_a_log_file_gets_a_line_per_tenth_of_the_run_with_the_time_left():
    f, out, clock = follow()
    total = 103  # 17 images x 6 methods + the report
    for job in range(total):
        f.job_started(job, "quantize", {"method": "kmeans", "key": f"img{job}.png"}, [None])
        clock.t += 2.0
        f.job_finished(job)
        f.progress(job + 1, total)
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12  # the first, one per tenth, the last
    assert lines[-1].startswith(f"cq: {total} of {total} jobs done")
    middle = next(line for line in lines if line.startswith("cq: 52 of 103"))
    assert "about 2 min left" in middle  # 51 jobs left at 2 s a job: 102 s


def test_a_terminal_gets_one_line_rewritten_in_place_and_a_newline_at_the_end():
    f, out, clock = follow(tty=True)
    for job in range(5):
        f.job_started(job, "quantize", {"method": "octree", "key": "a.png"}, [None])
        f.job_finished(job)
        f.progress(job + 1, 5)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r\033[K") >= 5
    assert text.rstrip("\n").rsplit("\r\033[K", 1)[1].startswith("cq: 5 of 5 jobs done")


def test_news_from_a_running_jobs_log_every_few_seconds(tmp_path):
    log = tmp_path / "cnn.log"
    log.write_text("2026-01-02 03:04:05,678 INFO cq.methods.cnn: cnn coffee: epoch 3, exact score 6101.20\n")
    f, out, clock = follow(tty=True)
    f.progress(0, 10)
    f.job_started(7, "quantize", {"method": "cnn", "key": "coffee.jpg"}, [str(log)])
    clock.t += 75
    f.tick()
    assert "running: cnn on coffee.jpg (75 s): cnn coffee: epoch 3, exact score 6101.20" in out.getvalue()
    with open(log, "a") as fh:
        fh.write("2026-01-02 03:04:09,001 INFO cq.methods.cnn: cnn coffee: epoch 4, exact score 6090.00\n")
    f.tick()
    assert "epoch 4" in out.getvalue().rsplit("\r\033[K", 1)[1]


def test_a_long_run_in_a_log_file_stays_short(tmp_path):
    """Ten hours with news every 5 s (a cnn's epochs): about 30 lines, not 7,200."""
    log = tmp_path / "cnn.log"
    f, out, clock = follow()
    f.progress(0, 3)
    f.job_started(1, "quantize", {"method": "cnn", "key": "big.tif"}, [str(log)])
    for epoch in range(7200):
        log.write_text(f"epoch {epoch}\n")
        clock.t += 5
        f.tick()
    assert 20 <= len(out.getvalue().splitlines()) <= 40


def test_failures_and_warnings_get_their_own_line_and_are_counted():
    f, out, clock = follow()
    f.progress(0, 4)
    f.job_started(1, "quantize", {"method": "direct", "key": "x.png"}, ["results/logs/direct/x.png.log"])
    f.job_failed(1)
    f.message("Warning: something a person should see")
    f.progress(1, 4)
    lines = out.getvalue().splitlines()
    assert "cq: job failed: direct on x.png (log: results/logs/direct/x.png.log)" in lines
    assert "Warning: something a person should see" in lines
    assert lines[-1].startswith("cq: 1 of 4 jobs done, 1 failed")


def test_the_line_stays_short_whatever_a_log_says(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("Reason: " + "x" * 6600 + "\n")
    f, out, clock = follow()
    f.job_started(1, "report", {}, [str(log)])
    f.tick()
    assert max(len(line) for line in out.getvalue().splitlines()) <= 160


@pytest.mark.parametrize("rule, wildcards, text", [
    ("quantize", {"method": "kmeans", "key": "a/b.jpg"}, "kmeans on a/b.jpg"),
    ("quantize", {"method": "kmeans", "key": "a%7Bword%7D 100%25.png"}, "kmeans on a{word} 100%.png"),
    ("quantize_shard", {"method": "octree", "shard": "0003"}, "octree, shard 0003"),
    ("report", {}, "the report"), ("all", {}, "all")])
def test_jobs_are_named_as_a_person_would(rule, wildcards, text):
    assert describe(rule, wildcards) == text


def test_last_log_line_drops_the_timestamp_and_logger(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("\n2026-01-02 03:04:05,678 INFO cq: kmeans on a.png: ok, score 1.0\n\n")
    assert last_log_line(str(log)) == "kmeans on a.png: ok, score 1.0"
    assert last_log_line(str(tmp_path / "none.log")) is None and last_log_line(None) is None


def _snakemake_logger(stream, level=logging.INFO):
    """A logger shaped as Snakemake's: a terminal handler and a log file handler."""
    logger = logging.Logger("snakemake.logging.test", level)
    logger.addHandler(logging.StreamHandler(stream))
    logger.addHandler(logging.FileHandler(stream.log_path))
    return logger


class Terminal(io.StringIO):
    def __init__(self, log_path):
        super().__init__()
        self.log_path = log_path


def test_the_filter_turns_job_events_into_progress_and_keeps_the_log_file_whole(tmp_path):
    from snakemake_interface_logger_plugins.common import LogEvent

    from cq.terminal import brief

    out = Terminal(tmp_path / "snakemake.log")
    logger = _snakemake_logger(out)
    shown = brief(logger, "brief")
    assert shown is not None and brief(logger, "brief") is None  # once per handler
    logger.info("Select jobs to execute...")
    logger.info("job", extra={"event": LogEvent.JOB_INFO, "jobid": 3, "rule_name": "quantize",
                              "wildcards": {"method": "octree", "key": "a.png"}, "log": []})
    logger.info("2 of 3 steps", extra={"event": LogEvent.PROGRESS, "done": 2, "total": 3})
    logger.warning("cq: something to see")
    logger.error("WorkflowError: cq: every result of this run failed", extra={"event": LogEvent.ERROR})
    logger.info("Nothing to be done (all requested files are present and up to date).")
    shown.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("cq: started · running: octree on a.png")
    assert lines[1].startswith("cq: 2 of 3 jobs done")
    assert lines[2:] == ["cq: something to see", "WorkflowError: cq: every result of this run failed", "Nothing to be done (all requested files are present and up to date)."]
    kept = (tmp_path / "snakemake.log").read_text()
    assert "Select jobs to execute..." in kept and "2 of 3 steps" in kept
    shown.remove()
    logger.info("Select jobs to execute...")
    assert out.getvalue().splitlines()[-1] == "Select jobs to execute..."


@pytest.mark.parametrize("mode, env_value, level", [("full", None, logging.INFO), ("brief", "full", logging.INFO),
                                                     ("brief", None, logging.DEBUG)])
def test_the_full_output_is_one_setting_away(tmp_path, monkeypatch, mode, env_value, level):
    from cq.terminal import brief

    monkeypatch.delenv("CQ_TERMINAL", raising=False)
    if env_value:
        monkeypatch.setenv("CQ_TERMINAL", env_value)
    assert brief(_snakemake_logger(Terminal(tmp_path / "s.log"), level), mode) is None


@pytest.mark.slow
def test_snakemake_and_cq_nightly_print_progress_lines_and_the_full_output_is_one_setting_away(tmp_path):
    """Plain snakemake and cq nightly alike: a few progress lines, no job listings, no Reason:
    lines, every failing file named at the end; --config terminal=full: Snakemake's listing."""
    import subprocess

    from conftest import command, cq_nightly_command, env, write_tiny_photos

    write_tiny_photos(tmp_path / "images")
    (tmp_path / "images/broken.png").write_bytes(b"not an image")
    (tmp_path / "test.yaml").write_text("input_dir: images\nresults_dir: results\nmethods: [median_cut, octree]\n")
    brief_env = {k: v for k, v in env().items() if k != "CQ_TERMINAL"}
    plain = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=300, env=brief_env)
    lines = (plain.stdout + plain.stderr).splitlines()
    assert plain.returncode == 0, "\n".join(lines)
    assert any(line.startswith("cq: 12 of 12 jobs done") for line in lines), lines  # 5 images x 2, report, all
    assert "cq:   failed: 2 × not an image Pillow can read (2 methods): broken.png" in lines
    assert not [line for line in lines if "wildcards:" in line or line.strip().startswith("Reason:")]
    assert len(lines) <= 30, "\n".join(lines)
    (tmp_path / "images/new.png").write_bytes((tmp_path / "images/rocket.png").read_bytes())
    nightly = subprocess.run(cq_nightly_command(tmp_path), capture_output=True, text=True, timeout=300, env=brief_env)
    lines = (nightly.stdout + nightly.stderr).splitlines()
    assert nightly.returncode == 0 and any(line.startswith("cq: 2 of 2 jobs done") for line in lines), lines
    assert len(lines) <= 20, "\n".join(lines)
    (tmp_path / "images/newer.png").write_bytes((tmp_path / "images/rocket.png").read_bytes())
    full = subprocess.run([*cq_nightly_command(tmp_path), "--config", "terminal=full"], capture_output=True,
                          text=True, timeout=300, env=brief_env)
    assert full.returncode == 0 and "wildcards: method=" in full.stdout + full.stderr


def test_the_end_of_a_run_groups_every_failure_by_reason_and_names_every_file():
    """Issue 19.4: the summary named the first 5 failures, all of one file; now every failing
    file is named under its reason, with counts, and the full list's path."""
    from cq.outcome import group_by_reason, print_summary

    failures = [(m, f"{name}", f"images/{name}: not an image Pillow can read")
                for m in ("kmeans", "octree", "cnn") for name in ("text.png", "b c.jpg")]
    failures += [(m, "empty.png", "images/empty.png: empty file (0 bytes)") for m in ("kmeans", "octree", "cnn")]
    failures += [("octree", f"many/{i:03d}.png", f"images/many/{i:03d}.png: truncated") for i in range(25)]
    groups = group_by_reason(failures)
    assert [(g["reason"], g["results"], g["n_images"]) for g in groups] == [
        ("truncated", 25, 25), ("not an image Pillow can read", 6, 2), ("empty file (0 bytes)", 3, 1)]
    out = io.StringIO()
    print_summary({"ok": 8, "failed": 34, "missing": 1, "ok_this_run": 8, "failed_this_run": 34,
                   "failure_groups": groups,
                   "missing_groups": group_by_reason([("cnn", "big.tif", "the job died (killed)")]),
                   "report": "results/report.html"}, out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 7, lines
    assert "cq:   failed: 6 × not an image Pillow can read (3 methods): b c.jpg, text.png" in lines
    assert "cq:   failed: 3 × empty file (0 bytes) (3 methods): empty.png" in lines
    assert lines[1].startswith("cq:   failed: 25 × truncated (octree): many/000.png,") and lines[1].endswith("and 15 more")
    assert "cq:   missing: 1 × the job died (killed) (cnn): big.tif" in lines
    assert "results/report.html#failures" in lines[-2] and lines[-1] == "cq: report: results/report.html"
