"""The Hypothesis profile tests/conftest.py loads: no deadline anywhere (a loaded machine
cannot fail a test), and derandomized examples when CI is set."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = ("import tests.conftest; from hypothesis import settings; d = settings.default; "
         "print(d.derandomize, d.deadline, d.database is None)")


def _loaded(ci: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_runs_the_same_examples_every_time(ci):
    assert _loaded(ci) == "True None True"


def test_no_deadline_outside_ci():
    assert _loaded(None).split()[1] == "None"


def test_every_test_module_inherits_the_profile():
    """settings(...) made in a test module (test_properties' SETTINGS) keep the profile's
    deadline and derandomize unless they name them."""
    from hypothesis import settings
    mine = settings(max_examples=3)
    assert mine.deadline is None and mine.derandomize == settings.default.derandomize
