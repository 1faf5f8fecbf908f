"""tests/test_never_beaten.py under its long hypothesis profile (400 drawn images per property).

Run: python bench/never_beaten.py [pytest args]. A failure it finds goes into the test as an
``@example`` (see the test's docstring).
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", str(REPO / "tests/test_never_beaten.py"),
                              *sys.argv[1:]], env={**os.environ, "CQ_NEVER_BEATEN": "long"}, cwd=REPO))
