"""The end of a run: what is missing and why, a report whatever died, and a short summary.

Called when a run ends, through cq.run.Run.close: by the workflow's hooks (rules/run.smk, in
Snakemake's main process) and by ``cq nightly`` when Snakemake itself died before that.

- :func:`missing` lists every (image, method) without a record, with the reason read from
  the job's log (killed, out of memory, a crash) or "not run"; these are transient: the next
  night runs them again.
- :func:`missing_stub` turns one into the error-record shape that the report already lists
  (``status: error``, ``error``, ``method``, ``image.path``), marked ``missing: true``.
- :func:`conclude` builds the report from the records present plus those stubs when the
  run's own report job did not (a job died, so Snakemake never started it), updates
  ``{results_dir}/best/``, writes ``.history/outcome.json`` and returns the summary.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from cq import lock
from cq.discover import result_path
from cq.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

OUTCOME = ".history/outcome.json"
# Set to "cq" by `cq nightly`, which runs Snakemake without its report job: the report is then
# built by the end-of-run hook (atomically over the previous one, never deleted first).
REPORT_ENV = "CQ_REPORT_BY"
NAMED = 10  # images named per reason at the end of a run; the report lists every one


def last_line(path: str) -> str | None:
    """The last non-empty line of a (small) log file, or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
        return lines[-1][:300] if lines else None
    except OSError:
        return None


def missing_reason(log_path: str | None, since_ns: int) -> str:
    """Why a result is missing, from its job's log (written this run, or not)."""
    from cq.history import written_this_run

    if log_path is None or not written_this_run(log_path, since_ns):
        return "not run: the run ended (stopped, killed or failed) before this job started"
    tail = last_line(log_path)
    return ("the job died without writing its record (killed, out of memory or a crash)"
            + (f"; its log ends: {tail}" if tail else "; its log is empty"))


def missing(results_dir: str, images, methods, log_of, since_ns: int) -> list[dict]:
    """[{image, method, reason}] for each (image, method) that has no record."""
    out = []
    for method in methods:
        for image in images:
            if not os.path.exists(result_path(results_dir, method, image, ".json")):
                out.append({"image": image, "method": method,
                            "reason": missing_reason(log_of(method, image), since_ns)})
    return out


def remove_orphan_pngs(results_dir: str, gone) -> None:
    """Remove the PNG of each missing result: without its record (the commit point) it is
    either half a job killed between its PNG and its record, or an old output whose record
    the start check deleted; never a result. Its job runs again next night."""
    for item in gone:
        try:
            os.unlink(result_path(results_dir, item["method"], item["image"], ".png"))
        except FileNotFoundError:
            pass


def missing_stub(item: dict, input_dir: str) -> dict:
    """A missing result as the report lists an error (transient: retried next night)."""
    return {"status": "error", "error": f"missing: {item['reason']}", "method": item["method"],
            "image": {"path": f"{input_dir}/{item['image']}"}, "missing": True, "transient": True}


def write_report(results_dir: str, input_dir: str, images, methods, *, gone=(), index: dict | None = None,
                 skipped=(), csv_path=None, html_path=None, summary_path=None, best_dir=None) -> int:
    """The report (cq.report) over the record of every (image, method), a corrupt one as an
    error row (cq.record.load_or_stub), plus one error row per ``gone`` (missing) result,
    with the run history and what discovery skipped; returns the number of rows. Used by the
    report job and by the end-of-run hook alike. ``best_dir``: each image's best output for
    ``snakemake --report`` (cq.report.bundle)."""
    from cq.best import is_valid
    from cq.history import load_history
    from cq.record import load_or_stub
    from cq.report import build_report

    index, lost = index or {}, {(m["image"], m["method"]) for m in gone}

    def load(image, method):
        path = result_path(results_dir, method, image, ".json")
        record = load_or_stub(path, image, method, input_dir, trusted=is_valid(index, image, method, path))
        return named_as_found(record, input_dir, image)

    records = [load(image, method) for method in methods for image in images if (image, method) not in lost]
    records += [missing_stub(item, input_dir) for item in gone]
    build_report(records, Path(results_dir), Path(input_dir), Path(csv_path or Path(results_dir) / "report.csv"),
                 Path(html_path or Path(results_dir) / "report.html"), history=load_history(results_dir),
                 summary_path=summary_path, skipped=[*skipped, *dropped(results_dir, methods)],
                 method_order=list(methods), best_dir=best_dir)
    return len(records)


def named_as_found(record: dict, input_dir: str, image: str) -> dict:
    """``record`` with its image path as this run names the image: a record made by a run
    from another working directory names it relative to that one, and the report would list
    it as another image."""
    path = f"{input_dir}/{image}"
    found = record.get("image") if isinstance(record.get("image"), dict) else {}
    return record if found.get("path") == path else {**record, "image": {**found, "path": path}}


def dropped(results_dir: str, methods) -> list[str]:
    """One line per method dropped from the config whose results are kept in the results
    folder: a folder of records (each naming it as its method) that no configured method owns."""
    from cq.config import RESERVED

    out = []
    try:
        folders = sorted(e.name for e in os.scandir(results_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return out
    for name in folders:
        if name in methods or name in RESERVED:
            continue
        records = list(Path(results_dir, name).rglob("*.json"))
        try:
            ours = bool(records) and json.loads(records[0].read_text(encoding="utf-8")).get("method") == name
        except (OSError, ValueError, AttributeError):
            ours = False
        if ours:
            out.append(f"{name}: dropped from the config; its {len(records)} results are kept in "
                       f"{results_dir}/{name}/ (not in this report)")
    return out


def count_results(index: dict, methods, since_ns: int) -> dict:
    """ok / failed counts over all results (from cq.best's record index), and those written
    by this run (an mtime at or after its start mark, cq.history.mark_start), with every
    failure grouped by reason (:func:`group_by_reason`)."""
    counts = {"ok": 0, "failed": 0, "ok_this_run": 0, "failed_this_run": 0}
    failures = []  # every failed result, this run's or not: what is broken now
    for image, entry in index.items():
        for method in methods:
            if method not in entry:
                continue
            version, status, _, error = entry[method][:4]
            created = entry[method][5] if len(entry[method]) > 5 else None
            ok = status == "ok"
            counts["ok" if ok else "failed"] += 1
            # Computed by this run: created since its start mark (a touched image's record is
            # rewritten with its new stat, but keeps its creation time; older records hold it
            # in whole seconds, compared as such).
            if created is None:
                this_run = version[0] >= since_ns
            else:
                this_run = created >= (since_ns / 1e9 if created % 1 else since_ns // 10**9)
            if this_run:
                counts["ok_this_run" if ok else "failed_this_run"] += 1
            if not ok:
                failures.append((method, image, error))
    return {**counts, "failure_groups": group_by_reason(failures)}


def reason_of(image: str, message) -> str:
    """A failure's reason without the file it names ("images/a.jpg: not an image Pillow can
    read" -> "not an image Pillow can read"), so equal reasons group; its first line."""
    lines = str(message or "").strip().splitlines()
    text = lines[0] if lines else "no message"
    at = text.find(f"{image}: ")
    return text[at + len(image) + 2:] if at >= 0 else text


def group_by_reason(failures) -> list[dict]:
    """(method, image, message) -> [{reason, results, images: the first NAMED, n_images,
    methods}], the most frequent reason first."""
    groups: dict[str, dict] = {}
    for method, image, message in failures:
        g = groups.setdefault(reason_of(image, message), {"results": 0, "images": set(), "methods": set()})
        g["results"] += 1
        g["images"].add(image)
        g["methods"].add(method)
    out = [{"reason": reason, "results": g["results"], "n_images": len(g["images"]),
            "images": sorted(g["images"])[:NAMED], "methods": sorted(g["methods"])}
           for reason, g in groups.items()]
    return sorted(out, key=lambda g: (-g["results"], g["reason"]))


def status_of(summary: dict, status: str) -> str:
    """The history line's status: what happened, not only whether Snakemake succeeded."""
    if all_failed(summary):
        return "failed"
    if summary["missing"] and status in ("ok", "error"):  # jobs died, the rest finished
        return "incomplete"
    return status


def conclude(results_dir: str, input_dir: str, images, methods, log_of, since_ns: int, *,
             report_built: bool, finish=None, skipped=()) -> dict:
    """Finish a run's products and return its summary: ``best/``, then ``finish(summary)``
    (the history line, so that the report shows the run as ended), then the report when the
    run's report job did not build it, then ``.history/outcome.json``."""
    from cq.best import refresh_index, update_best

    gone, problems = missing(results_dir, images, methods, log_of, since_ns), []
    remove_orphan_pngs(results_dir, gone)
    try:
        best_updated, index = update_best(results_dir, images, methods)
    except OSError as e:
        log.error("cq: %s/best could not be updated: %s", results_dir, e)
        best_updated, index = 0, refresh_index(results_dir, images, methods)
        problems.append(f"best/ not updated: {e.strerror or e}")
    summary = count_results(index, methods, since_ns)
    summary.update(missing=len(gone), missing_groups=group_by_reason((m["method"], m["image"], m["reason"]) for m in gone),
                   best_updated=best_updated, report=str(Path(results_dir) / "report.html"),
                   since_ns=since_ns)
    if finish is not None:
        line = finish(summary)
        if line and line.get("note"):
            problems.append(f"history: {line['note']}")
    if not report_built or gone:
        try:
            write_report(results_dir, input_dir, images, methods, gone=gone, index=index, skipped=skipped)
        except Exception as e:  # the previous report stays; say why
            log.error("cq: the report could not be rebuilt: %s", e)
            problems.append(f"report not rebuilt (the previous one stays): {e}")
    summary.update(problems=problems, end=time.time(), run=lock.run_id())
    try:
        atomic_write_bytes(Path(results_dir) / OUTCOME, json.dumps(summary).encode())
    except OSError:
        pass
    return summary


def read_outcome(results_dir: str) -> dict | None:
    try:
        return json.loads((Path(results_dir) / OUTCOME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def print_summary(summary: dict, stream=None) -> None:
    """A few lines: results ok and failed; every failure and missing result grouped by reason,
    with counts and the images named (the first NAMED of each); problems; the report's path."""
    stream = stream or sys.stderr
    report = summary["report"]
    print(f"cq: {summary['ok']} results ok, {summary['failed']} failed, {summary['missing']} missing "
          f"(this run: {summary['ok_this_run']} ok, {summary['failed_this_run']} failed)", file=stream)
    for kind, groups in (("failed", summary.get("failure_groups") or []), ("missing", summary.get("missing_groups") or [])):
        for g in groups:
            names = ", ".join(g["images"]) + (f" and {g['n_images'] - len(g['images'])} more" if g["n_images"] > len(g["images"]) else "")
            methods = g["methods"][0] if len(g["methods"]) == 1 else f"{len(g['methods'])} methods"
            print(f"cq:   {kind}: {g['results']} × {g['reason']} ({methods}): {names}", file=stream)
    if summary.get("failure_groups") or summary.get("missing_groups"):
        print(f"cq:   every failure with its message: {report}#failures and {Path(report).with_name('report.csv')}",
              file=stream)
    for line in summary.get("problems", ()):
        print(f"cq:   problem: {line}", file=stream)
    print(f"cq: report: {report}", file=stream)


def exit_status(summary: dict, snakemake_rc: int = 0) -> int:
    """0 for a night that did everything; 1 when a job died, a result is missing, every
    result of the run failed, or the report, best/ or history line could not be written."""
    bad = snakemake_rc != 0 or all_failed(summary) or summary["missing"] or summary.get("problems")
    return 1 if bad else 0


def all_failed(summary: dict) -> bool:
    """True when this run produced results and none of them is ok (or all are missing)."""
    done = summary["ok_this_run"] + summary["failed_this_run"] + summary["missing"]
    return done > 0 and summary["ok_this_run"] == 0
