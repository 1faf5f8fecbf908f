"""A fuzzed night (issue 18): a hypothesis state machine that changes a folder, the config and
the run's surroundings in every way a user or a machine may, runs `cq nightly`, and checks
after every night that:

- every image has a current record (its content's hash, the configured spec, k colours) or an
  error record saying why; a missing result is a report row saying so;
- no PNG is without a record and no temporary file is left;
- the report lists every image (and no other), and ``best/`` holds each image's best result;
- the inputs are unchanged;
- the exit code is as documented: 0; 1 when a job died; 2, in one line and writing nothing,
  for bad settings and for an input with far fewer images than the last night found; 75 for
  a run refused because another one is live.

The changes: add, replace, replace under the same size and mtime, an older copy, a future
mtime, touch, rename, delete, empty the folder, hostile names, k, weights, kmeans parameters,
methods. The faults during a night: the run killed at a random moment, a job killed, an image
overwritten, a full disk, the lock file deleted or replaced beside a second run, two nights at
once; and bad settings.

The short profile below runs in the default suite; ``python bench/chaos.py`` runs the long one.
"""

from __future__ import annotations

import collections
import copy
import os
import re
import signal
import time

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
    "braces": "holiday {1}.png",  # a Snakemake wildcard
    "braces folder": "{a}/IMG_{2024}.png",
    "angle brackets": "<logs> 100%7B.png",  # a Snakemake path variable, a percent-encoding
}
# Settings that stop a night at start-up: exit 2, one line, nothing written.
BAD_SETTINGS = {"unknown method": {"methods": ["octree", "no_such_method"]}, "no methods": {"methods": []},
                "k 0": {"k": 0}, "k 300": {"k": 300}, "unknown key": {"colour_count": 8},
                "missing input_dir": {"input_dir": "no/such/folder"}}
SHARE = 0.5  # min_image_share's default
UNKNOWN = -1  # the image count of the last night that ended, after a run killed at its end


# One change to the folder or the config: (kind, which image, seed). Several come before a night.
CHANGE_KINDS = ("add", "add_bmp", "add_in_sub", "replace", "replace_keeping_size_and_mtime", "older_copy",
                "future_mtime", "touch", "rename", "delete", "empty_the_folder", "set_k", "set_weights",
                "set_kmeans_parameters", "set_methods", *(f"hostile:{kind}" for kind in sorted(HOSTILE)))
CHANGES = st.lists(st.tuples(st.sampled_from(CHANGE_KINDS), PICK, SEEDS), min_size=3, max_size=6)
SOME_CHANGES = st.lists(st.tuples(st.sampled_from(CHANGE_KINDS), PICK, SEEDS), min_size=2, max_size=4)


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
        self.last: int | None = None  # images the last night that ended found (UNKNOWN: cannot tell)
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
        if kind in ("replace", "replace_keeping_size_and_mtime", "older_copy", "future_mtime", "touch", "rename",
                    "delete", "empty_the_folder") and rel is None:
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
        elif kind == "future_mtime":  # new content, then touch -d 2031-01-01
            ws.write_image(rel, seed)
            os.utime(path, (1_924_992_000, 1_924_992_000))
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

    def refusal_due(self) -> bool | None:
        """Whether the next night must refuse: fewer than half the images the last night that
        ended found (none included); None when that count is unknown."""
        if self.last == UNKNOWN:
            return None
        return bool(self.last) and len(self.ws.accepted()) < SHARE * self.last

    def calm_night(self, accept_fewer: bool = False) -> None:
        """A night with no fault; a refused one (an emptied folder) is checked, then accepted."""
        due = False if accept_fewer else self.refusal_due()
        before, products, created, lines = self.ws.inputs(), self.ws.products(), self.ws.created(), self.ws.history()
        rc, output = self.ws.night(accept_fewer=accept_fewer)
        if due or (due is None and rc == 2):
            self.check_refused(rc, output, before, products, lines)
            self.fault("night refused: far fewer images")
            self.calm_night(accept_fewer=True)
            return
        self.check(rc, output, before)
        self.check_computed(output, created)
        self.last = len(self.ws.accepted())

    def check_refused(self, rc, output, before, products, lines) -> None:
        """A refused night: exit 2, one line, nothing written (report, best/, history)."""
        self.stats["nights"] += 1
        found = [] if rc == 2 else [f"exit {rc} where far fewer images must refuse the night (2)"]
        if output.count("\n") != 1 or "--accept-fewer" not in output:
            found.append("the refusal is not one line naming --accept-fewer")
        if self.ws.inputs() != before or self.ws.products() != products or self.ws.history() != lines:
            found.append("a refused night changed the inputs, the report, best/ or the history")
        self.report(found, output)

    def check_computed(self, output: str, created: dict) -> None:
        """The summary's "this run" counts the results computed: a touch computes nothing."""
        said = re.search(r"this run: (\d+) ok, (\d+) failed", output)
        after = self.ws.created()
        computed = sum(1 for key, stamp in after.items() if created.get(key) != stamp)
        if said and int(said[1]) + int(said[2]) != computed:
            self.report([f"the summary says {said[0]!r}; this night computed {computed}"], output)

    def settle(self) -> None:
        """Before a faulty night: a night that would refuse runs first (checked), accepted."""
        if self.refusal_due() is not False:
            self.calm_night()

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

    @rule(kind=st.sampled_from(sorted(BAD_SETTINGS)))
    def bad_settings(self, kind):
        """A night with a bad setting stops at start-up (exit 2, one line), writing nothing."""
        self.trail.append(f"bad settings: {kind}")
        good = copy.deepcopy(self.ws.config)
        self.ws.config.update(BAD_SETTINGS[kind])
        self.ws.write_config()
        before, products, lines = self.ws.inputs(), self.ws.products(), self.ws.history()
        try:
            rc, output = self.ws.night()
        finally:
            self.ws.config = good
            self.ws.write_config()
        self.fault(f"bad settings: {kind}")
        self.stats["nights"] += 1
        found = [] if rc == 2 else [f"exit {rc} on bad settings ({kind}), expected 2"]
        if output.count("\n") != 1 or not output.startswith("cq: error: "):
            found.append(f"bad settings ({kind}) not in one line")
        if self.ws.inputs() != before or self.ws.products() != products or self.ws.history() != lines:
            found.append(f"a night with bad settings ({kind}) wrote something")
        self.report(found, output)

    @rule(changes=SOME_CHANGES, at=AT)
    def kill_the_run(self, changes, at):
        """SIGKILL to the whole run at a random moment; the next night must mend everything."""
        self.apply(changes, "kill the run")
        self.settle()
        before = self.ws.inputs()
        proc = self.ws.start()
        end = time.monotonic() + at
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.02)
        killed = proc.poll() is None
        if killed:
            self.fault("kill the run")
        self.ws.kill(proc)
        self.ws.finish(proc)
        self.stats["nights"] += 1
        self.last = UNKNOWN if killed else len(self.ws.accepted())  # killed after its line, or before?
        self.report(["a killed night changed the inputs"] if self.ws.inputs() != before else [])
        self.calm_night()

    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def kill_a_job(self, changes, seed):
        """A job killed as the OOM killer does: the report lists its result as missing."""
        self.apply(changes, "kill a job")
        self.settle()  # first: a night refused for far fewer images runs, accepted
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
        self.last = len(self.ws.accepted())

    @rule(changes=SOME_CHANGES, i=PICK, seed=SEEDS)
    def overwrite_during_the_night(self, changes, i, seed):
        self.apply(changes, "overwrite during the night")
        self.settle()  # first: a night refused for far fewer images runs, accepted
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
        self.last = len(self.ws.accepted())

    @precondition(lambda self: self.ws.tmpfs)
    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def fill_the_disk(self, changes, seed):
        self.apply(changes, "fill the disk")
        self.settle()  # first: a night refused for far fewer images runs, accepted
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
        self.last = UNKNOWN  # its line may be kept for the next night, or never begun
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
        self.settle()  # first: a night refused for far fewer images runs, accepted
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
        self.last = len(self.ws.accepted())

    @rule(changes=SOME_CHANGES, seed=SEEDS)
    def two_nights_at_once(self, changes, seed):
        self.apply(changes, "two nights at once")
        self.settle()  # first: a night refused for far fewer images runs, accepted
        self.one_job_at_least(seed)
        before, lines = self.ws.inputs(), len(self.ws.history())
        procs = [self.ws.start(), self.ws.start(elsewhere=True)]
        (rc1, out1), (rc2, out2) = [self.ws.finish(p) for p in procs]
        self.fault("two nights at once")
        ran = [rc for rc in (rc1, rc2) if rc != EX_LOCKED]
        runs = self.ws.history()
        found = [] if {rc1, rc2} <= {0, EX_LOCKED} and ran else [f"two nights at once exited {rc1} and {rc2}"]
        if len(runs) != lines + len(ran) or any(r["status"] != "ok" for r in runs[lines:]):
            found.append(f"history after two nights at once: {[r['status'] for r in runs[lines:]]}")
        self.report(found, out1 + out2)
        self.check(ran[0] if ran else 0, out1 + out2, before)
        self.last = len(self.ws.accepted())


SHORT = settings(max_examples=2, stateful_step_count=4, deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.reuse, Phase.generate],
                 suppress_health_check=list(HealthCheck))

TestNight = NightMachine.TestCase
TestNight.settings = SHORT
