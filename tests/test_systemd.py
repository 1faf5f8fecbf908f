"""The systemd units in contrib/systemd/: they pass `systemd-analyze verify` without a warning,
run `cq nightly`, count exit 75 (another run holds the lock) as success, and the timer starts
the service every night."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_or_skip

UNITS = REPO / "contrib/systemd"
SITE = "/opt/cq"  # where the shipped units expect the checkout; the test points it at a stand-in


def _settings(unit: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit file (sections ignored: each key here is in one section)."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_service_runs_cq_nightly_and_75_is_success():
    service = _settings(UNITS / "cq-nightly.service")
    (command,) = service["ExecStart"]
    argv = shlex.split(command)
    assert argv[0] == f"{SITE}/.venv/bin/cq" and argv[1] == "nightly" and "--config" in argv
    assert "75" in service["SuccessExitStatus"][0].split() and service["Type"] == ["oneshot"]
    timer = _settings(UNITS / "cq-nightly.timer")
    assert timer["OnCalendar"] and timer["Persistent"] == ["true"] and timer["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_or_skip("no systemd-analyze on PATH (apt-get install -y systemd)")
    site = tmp_path / "site"  # a stand-in for /opt/cq: verify checks that ExecStart is executable
    (site / ".venv/bin").mkdir(parents=True)
    (site / ".venv/bin/cq").symlink_to(Path(sys.executable).with_name("cq"))
    for unit in UNITS.glob("cq-nightly.*"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(SITE, str(site)))
    done = subprocess.run([analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.glob("cq-nightly.*"))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr + done.stdout
