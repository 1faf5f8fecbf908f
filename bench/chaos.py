"""Chaos nights: the night state machine of tests/test_night_machine.py, long profile.

    python bench/chaos.py [--nights 300] [--steps 10] [--verbose]

Runs the machine's rules (issue 18) until ``--nights`` nights have run, ``--steps`` rules per
fresh workspace: changes before each night (new, replaced, same size and mtime, older copy,
touch, rename, delete, an emptied folder, hostile names: a leading dash, quotes and ``$( )``,
250 bytes of multibyte UTF-8, a line break, a name spelt as another image's result key; k,
weights, kmeans parameters and the methods changed) and faults during it (the run killed at a
random moment, a job killed, an image overwritten, the results' tmpfs full (root only), the
lock file deleted or replaced with a second run tried beside the first, two nights at once).
After every night it checks the machine's invariants (see that module). Unlike the test, it
does not stop at the first violation: it counts them, and prints each with the steps that led
to it. Prints nights, faults by kind, violations, wall and CPU time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from test_night_machine import NightMachine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=300)
    parser.add_argument("--steps", type=int, default=10, help="rules per workspace (each is one or two nights)")
    parser.add_argument("--verbose", action="store_true", help="print each violation's night output")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    NightMachine.strict = False
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as ^C: workspaces torn down, tmpfs unmounted
    stats, t0, cpu0 = NightMachine.stats, time.perf_counter(), os.times()
    shown = []

    def progress():
        print(f"workspace {stats['workspaces']:3d}: nights {stats['nights']:4d}  faults {faults(stats):5d}  "
              f"violations {len(NightMachine.violations)}", flush=True)
        show_new()

    def show_new():
        for message in NightMachine.violations[len(shown):]:
            print("  " + (message if args.verbose else message.split("\n--- output")[0]).replace("\n", "\n  "))
            shown.append(message)
    NightMachine.progress = staticmethod(progress)
    try:
        while stats["nights"] < args.nights:
            # Hypothesis tries the simplest examples first in each call (plain additions), so one
            # call runs as many workspaces as the nights still to run need.
            examples = max(2, (args.nights - stats["nights"]) // (args.steps + 4) + 1)
            run_state_machine_as_test(NightMachine, settings=settings(
                max_examples=examples, stateful_step_count=args.steps, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    except KeyboardInterrupt:
        print("interrupted")
        show_new()
    cpu1 = os.times()
    cpu = cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system
    print(f"\nnights {stats['nights']} in {stats['workspaces']} workspaces, faults injected {faults(stats)}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k not in COUNTS))
    print(f"violations {len(NightMachine.violations)} (each printed after its workspace)")
    print(f"wall {time.perf_counter() - t0:.0f} s, cpu (children) {cpu:.0f} s, load {os.getloadavg()[0]:.2f}")
    sys.exit(1 if NightMachine.violations else 0)


COUNTS = ("nights", "workspaces")


def faults(stats) -> int:
    return sum(v for k, v in stats.items() if k not in COUNTS)


if __name__ == "__main__":
    main()
