"""A fuzzed night (issue 18): a hypothesis state machine that changes a folder, the config and
the run's surroundings in every way a user or a machine may, runs `cq nightly`, and checks
after every night that:

- every image has a current record (its content's hash, the configured spec, k colours) or an
  error record saying why; a missing result is a report row saying so;
- no PNG is without a record and no temporary file is left;
- the report lists every image (and no other), and ``best/`` holds each image's best result;
- the inputs are unchanged;
- the exit code is as documented (0; 75 for a run refused by a live one).

The short profile below runs in the default suite; ``python bench/chaos.py`` runs the long one.
"""

from __future__ import annotations

import collections
import copy
import os
import signal
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from conftest import held_jobs
from cq.discover import result_key
from night_workspace import EX_LOCKED, Workspace

SEEDS = st.integers(0, 2**16)
PICK = st.integers(0, 1000)
AT = st.floats(0.0, 4.0)
METHOD_SETS = (["octree"], ["octree", "kmeans"], ["kmeans"], ["median_cut", "octree"])
WEIGHTS = ({"mse": 2, "max_cost": 21, "mean_cost": 42}, {"mse": 1, "max_cost": 0, "mean_cost": 5})
KMEANS = ({"n_init": 1}, {"n_init": 2, "seed": 3}, {})
# Hostile names: each must be processed like any other, or skipped with a reason (line breaks).
HOSTILE = {
    "dash": "-rf --all.png",
    "multibyte": "é" * 123 + ".png",  # 250 bytes: its results get a shortened key
    "spaces and quotes": "a 'b' \"c\" $(d).bmp",
    "newline": "line\nbreak.png",
    "collision": None,  # a name spelt as a long image's result key (see hostile())
}


# One change to the folder or the config: (kind, which image, seed). Several come before a night.
CHANGE_KINDS = ("add", "add_bmp", "add_in_sub", "replace", "replace_keeping_size_and_mtime", "older_copy",
                "touch", "rename", "delete", "empty_the_folder", "set_k", "set_weights", "set_kmeans_parameters",
                "set_methods", *(f"hostile:{kind}" for kind in sorted(HOSTILE)))
CHANGES = st.lists(st.tuples(st.sampled_from(CHANGE_KINDS), PICK, SEEDS), min_size=2, max_size=5)
SOME_CHANGES = st.lists(st.tuples(st.sampled_from(CHANGE_KINDS), PICK, SEEDS), min_size=1, max_size=3)


class NightMachine(RuleBasedStateMachine):
    """One folder, many nights. Each rule makes a few changes, then runs a night (a calm one,
    or one with a fault during it) and checks it."""

    stats = collections.Counter()  # nights and faults, over every instance (bench/chaos.py prints them)
    violations: list[str] = []
    strict = True  # raise on the first violation (tests); bench/chaos.py collects them instead
    progress = staticmethod(lambda: None)  # called after each workspace (bench/chaos.py prints)

    def __init__(self):
        super().__init__()
        self.ws = Workspace()
        self.count = 0
        self.trail: list[str] = []  # the steps so far, printed with a violation

    def teardown(self):
        self.ws.close()
        self.stats["workspaces"] += 1
        self.progress()

    # --- changes before a night -------------------------------------------------------------

    def fault(self, kind: str) -> None:
        self.stats[kind] += 1

    def new_name(self, bmp: bool = False, sub: bool = False) -> str:
        self.count += 1
        return f"{'sub/' if sub else ''}img{self.count:03d}.{'bmp' if bmp else 'png'}"

    def pick(self, i: int, suffix: str = "") -> str | None:
        names = [n for n in self.ws.accepted() if n.endswith(suffix)]
        return names[i % len(names)] if names else None

    def change(self, kind: str, i: int, seed: int) -> None:
        """Apply one change; one that needs an image is skipped (not counted) without one."""
        ws, rel = self.ws, self.pick(i, ".bmp" if kind == "replace_keeping_size_and_mtime" else "")
        if kind in ("replace", "replace_keeping_size_and_mtime", "older_copy", "touch", "rename", "delete",
                    "empty_the_folder") and rel is None:
            return
        path = ws.images / rel if rel else None
        if kind.startswith("add"):
            ws.write_image(self.new_name(bmp=kind == "add_bmp", sub=kind == "add_in_sub"), seed)
        elif kind == "replace":
            ws.write_image(rel, seed)
        elif kind == "replace_keeping_size_and_mtime":  # other pixels, same size (BMP), touch -r
            before = path.stat()
            ws.write_image(rel, seed)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        elif kind == "older_copy":  # other content with an older mtime (cp -p of an old version)
            ws.write_image(rel, seed)
            os.utime(path, (1_000_000_000, 1_000_000_000))
        elif kind == "touch":
            os.utime(path, None)
        elif kind == "rename":
            new = ws.images / self.new_name(bmp=rel.endswith(".bmp"), sub=seed % 2 == 1)
            new.parent.mkdir(exist_ok=True)
            os.rename(path, new)
        elif kind == "delete":
            path.unlink()
        elif kind == "empty_the_folder":
            for each in ws.files():
                (ws.images / each).unlink()
        elif kind.startswith("set_"):
            self.set(kind, seed)
        else:
            self.hostile(kind.partition(":")[2], seed)
        self.fault(kind)

    def set(self, kind: str, seed: int) -> None:
        key, choices = {"set_k": ("k", (3, 4, 6)), "set_weights": ("weights", WEIGHTS),
                        "set_kmeans_parameters": ("kmeans", KMEANS), "set_methods": ("methods", METHOD_SETS)}[kind]
        value = choices[seed % len(choices)]
        self.ws.config[key] = copy.deepcopy(value)
        self.ws.write_config()

    def hostile(self, kind: str, seed: int) -> None:
        if kind == "collision":  # a 245-byte name, and a file named as its result key
            long = "é" * 120 + f"{seed % 10}.png"
            self.ws.write_image(long, seed)
            self.ws.write_image(result_key(long), seed + 1)
        else:
            self.ws.write_image(HOSTILE[kind], seed)

    def apply(self, changes, night: str = "calm night") -> None:
        self.trail.append(f"{[c[0] for c in changes]} then {night}")
        for kind, i, seed in changes:
            self.change(kind, i, seed)

    def one_job_at_least(self, seed: int) -> None:
        self.ws.write_image(self.new_name(), seed)

    # --- checks -----------------------------------------------------------------------------

    def check(self, rc: int, output: str, before: dict, *, rcs=(0,), complete=True, skip=()) -> None:
        """The invariants after a night that ended."""
        self.stats["nights"] += 1
        found = [] if rc in rcs else [f"exit {rc}, expected {' or '.join(map(str, rcs))}"]
        if "Traceback" in output:
            found.append("a traceback in the output")
        after = self.ws.inputs()
        changed = sorted(rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel) and rel not in skip)
        if changed:
            found.append(f"inputs changed by the night: {changed[:3]}")
        found += self.ws.violations(complete=complete, skip=skip)
        runs = self.ws.history()
        if complete and rc == 0 and (not runs or runs[-1]["status"] != "ok"):
            found.append(f"the night's history line says {runs[-1]['status'] if runs else None}")
        if any("\n" in rel or "\r" in rel for rel in self.ws.files()) and rc == 0:
            skipped = " ".join(runs[-1].get("skipped") or ()) if runs else ""
            if "line break" not in skipped:
                found.append(f"a name with a line break is not listed as skipped: {skipped[:200]!r}")
        self.report(found, output)

    def report(self, found: list[str], output: str = "") -> None:
        if found:
            message = "\n".join(found) + f"\nafter: {'; '.join(self.trail)}\n--- output (tail) ---\n" + output[-3000:]
            if self.strict:
                raise AssertionError(message)
            self.violations.append(message)

    def calm_night(self) -> None:
        before = self.ws.inputs()
        rc, output = self.ws.night()
        self.check(rc, output, before)

    # --- the rules --------------------------------------------------------------------------

    @initialize(seed=SEEDS)
    def first_night(self, seed):
        self.trail.append("first night")
        for bmp in (False, False, True):
            self.ws.write_image(self.new_name(bmp), seed + self.count)
        self.calm_night()

    @rule(changes=CHANGES)
    def changes_then_a_night(self, changes):
        self.apply(changes)
        self.calm_night()

    @rule(changes=SOME_CHANGES, at=AT)
    def kill_the_run(self, changes, at):
        """SIGKILL to the whole run at a random moment; the next night must mend everything."""
        self.apply(changes, "kill the run")
        before = self.ws.inputs()
        proc = self.ws.start()
        end = time.monotonic() + at
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is None:
            self.fault("kill the run")
        self.ws.kill(proc)
        self.ws.finish(proc)
        self.stats["nights"] += 1
        self.report(["a killed night changed the inputs"] if self.ws.inputs() != before else [])
        self.calm_night()

    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def kill_a_job(self, changes, seed):
        """A job killed as the OOM killer does: the report lists its result as missing."""
        self.apply(changes, "kill a job")
        self.one_job_at_least(seed)
        environ, hold = self.ws.held()
        before = self.ws.inputs()
        proc = self.ws.start(environ=environ)
        if self.ws.wait_for(lambda: held_jobs(hold), proc):
            self.fault("kill a job")
            os.kill(held_jobs(hold)[0], signal.SIGKILL)
        hold.unlink()
        rc, output = self.ws.finish(proc)
        self.check(rc, output, before, rcs=(0, 1), complete=False)

    @rule(changes=SOME_CHANGES, i=PICK, seed=SEEDS)
    def overwrite_during_the_night(self, changes, i, seed):
        self.apply(changes, "overwrite during the night")
        self.one_job_at_least(seed)
        rel = self.pick(i)
        environ, hold = self.ws.held()
        before = self.ws.inputs()
        proc = self.ws.start(environ=environ)
        if self.ws.wait_for(lambda: held_jobs(hold), proc):
            self.ws.write_image(rel, seed + 1)
            self.fault("overwrite during the night")
        hold.unlink()
        rc, output = self.ws.finish(proc)
        self.check(rc, output, before, skip={rel})

    @precondition(lambda self: self.ws.tmpfs)
    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def fill_the_disk(self, changes, seed):
        self.apply(changes, "fill the disk")
        self.one_job_at_least(seed)
        filler = self.ws.results / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
        except OSError:
            pass
        before = self.ws.inputs()
        rc, output = self.ws.night()
        filler.unlink()
        self.fault("full disk")
        self.stats["nights"] += 1
        found = [f"exit {rc} on a full disk"] if rc not in (0, 1) else []
        found += ["a traceback in the output"] if "Traceback" in output else []
        found += ["a full night changed the inputs"] if self.ws.inputs() != before else []
        self.report(found, output)
        self.calm_night()

    @rule(changes=SOME_CHANGES, seed=SEEDS, replace=st.booleans())
    def lose_the_lock_file(self, changes, seed, replace):
        """rm (or replace) results/.history/lock during a run: a second run is still refused,
        and the first ends with its own line, not marked interrupted."""
        self.apply(changes, "lose the lock file")
        self.one_job_at_least(seed)
        environ, hold = self.ws.held()
        before, lines = self.ws.inputs(), len(self.ws.history())
        first = self.ws.start(environ=environ)
        found = [] if self.ws.wait_for(lambda: held_jobs(hold), first) else ["the held night ended early"]
        lock = self.ws.results / ".history/lock"
        lock.unlink(missing_ok=True)
        if replace:
            lock.write_text('{"pid": 1}')
        self.fault("lock file replaced" if replace else "lock file deleted")
        rc2, out2 = self.ws.night(elsewhere=True)
        hold.unlink()
        rc, output = self.ws.finish(first)
        if rc2 != EX_LOCKED or "Traceback" in out2:
            found.append(f"a second run beside a live one exited {rc2}: {out2[-1500:]}")
        runs = self.ws.history()
        if len(runs) != lines + 1 or runs[-1]["status"] != "ok":
            found.append(f"history after the night: {[r['status'] for r in runs[lines:]]}")
        self.report(found, output)
        self.check(rc, output, before)

    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def two_nights_at_once(self, changes, seed):
        self.apply(changes, "two nights at once")
        self.one_job_at_least(seed)
        before, lines = self.ws.inputs(), len(self.ws.history())
        # One working directory (cron started twice); a run from another builds a report that
        # names the images by their records' paths, made relative to another directory.
        procs = [self.ws.start(), self.ws.start()]
        (rc1, out1), (rc2, out2) = [self.ws.finish(p) for p in procs]
        self.fault("two nights at once")
        ran = [rc for rc in (rc1, rc2) if rc != EX_LOCKED]
        runs = self.ws.history()
        found = [] if {rc1, rc2} <= {0, EX_LOCKED} and ran else [f"two nights at once exited {rc1} and {rc2}"]
        if len(runs) != lines + len(ran) or any(r["status"] != "ok" for r in runs[lines:]):
            found.append(f"history after two nights at once: {[r['status'] for r in runs[lines:]]}")
        self.report(found, out1 + out2)
        self.check(ran[0] if ran else 0, out1 + out2, before)


SHORT = settings(max_examples=2, stateful_step_count=4, deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.reuse, Phase.generate],
                 suppress_health_check=list(HealthCheck))

TestNight = NightMachine.TestCase
TestNight.settings = SHORT
