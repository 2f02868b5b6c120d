"""Scenario files (model/scenario.py): what a good file becomes, the order of its runs,
and every mistake reported by file, step and field before anything runs."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vfakefs.model import scenario
from vfakefs.model.scenario import ScenarioError, parse

NUMVFS = "/sys/class/net/eth0/device/sriov_numvfs"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "scenarios"


def test_a_file_becomes_its_steps():
    sc = parse(f'''
name = "churn"
description = "VFs come and go"
[[step]]
at = "500ms"
write = "{NUMVFS}"
value = 4
[[step]]
at = 1
control = "carrier"
value = ["eth0 0", "eth0 1"]
every = "250ms"
count = 5
on_error = "stop"
[[step]]
at = "1.5s"
write = "{NUMVFS}"
value = "2"
expect = "EBUSY"
note = "enabled VFs must be disabled first"
''', "churn.toml")
    assert sc.name == "churn" and sc.description == "VFs come and go" and sc.source == "churn.toml"
    a, b, c = sc.steps
    assert (a.number, a.at, a.path, a.control, a.values, a.count, a.expect) == (1, 0.5, NUMVFS, None, ("4\n",), 1, None)
    assert b.path == "/sys/kernel/debug/vfakefs/carrier" and b.control == "carrier"
    assert [b.value(k) for k in range(5)] == ["eth0 0\n", "eth0 1\n"] * 2 + ["eth0 0\n"]
    assert b.every == 0.25 and b.stop_on_error and not a.stop_on_error
    assert c.expect == errno.EBUSY and c.note.startswith("enabled")
    assert sc.runs == 7 and sc.end == 2.0
    assert b.describe() == "control carrier" and a.describe() == f"write {NUMVFS}"


def test_runs_interleave_by_time_then_file_order():
    sc = parse('''
[[step]]
at = 0
control = "dma"
value = "x"
every = "100ms"
count = 4
[[step]]
at = "200ms"
control = "carrier"
value = "eth0 0"
[[step]]
at = "250ms"
control = "carrier"
value = "eth0 1"
''')
    order = [(round(t, 6), s.number, k) for t, s, k in sc.timeline()]
    # at 0.2 both step 1 (its third run) and step 2 are due: the earlier step in the file first
    assert order == [(0.0, 1, 0), (0.1, 1, 1), (0.2, 1, 2), (0.2, 2, 0), (0.25, 3, 0), (0.3, 1, 3)]


def test_a_list_of_values_runs_once_per_value_without_count():
    sc = parse(f'[[step]]\nat = 0\nwrite = "{NUMVFS}"\nvalue = [4, 0, 8]\nevery = "1s"\n')
    assert sc.steps[0].count == 3 and [sc.steps[0].value(k) for k in range(3)] == ["4\n", "0\n", "8\n"]
    assert sc.end == 2.0


@pytest.mark.parametrize("text, where", [
    ("0.5", 0.5), ('"0.5"', 0.5), ('"250us"', 250e-6), ('"500ms"', 0.5), ('"2s"', 2.0), ('"1.5min"', 90.0),
    ('" 3 s "', 3.0), ("2", 2.0),
])
def test_durations(text, where):
    assert parse(f'[[step]]\nat = {text}\ncontrol = "dma"\nvalue = "x"\n').steps[0].at == pytest.approx(where)


def test_examples_parse():
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) >= 3
    for f in files:
        sc = scenario.load(f)
        assert sc.steps and sc.name == f.stem


def test_the_churn_example_is_the_issues_timeline():
    sc = scenario.load(EXAMPLES / "sriov-churn.toml")
    numvfs = [s.values[0].strip() for s in sc.steps if s.path.endswith("sriov_numvfs") and s.expect is None]
    assert numvfs == ["4", "0", "8", "0"]
    paths = [s.path for s in sc.steps]
    assert "/sys/bus/pci/devices/0000:03:00.0/remove" in paths and "/sys/bus/pci/rescan" in paths
    assert any(s.control == "carrier" and s.values == ("eth0 0\n",) for s in sc.steps)
    assert any(s.control == "dma" and s.count >= 50 for s in sc.steps)


# --- every mistake: FILE: step N: FIELD: message --------------------------------------------
STEP = '[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\n'
BAD = [
    # (file text, where, message)
    ("name = 'x'\n", "step", "no steps: a scenario lists its steps as [[step]] tables"),
    ("step = 3\n", "step", "no steps: a scenario lists its steps as [[step]] tables"),
    ("step = []\n", "step", "no steps: a scenario lists its steps as [[step]] tables"),
    ("nme = 'x'\n" + STEP, "nme", "unknown key (known at the top: description, name, step; steps are [[step]] tables)"),
    ("name = 3\n" + STEP, "name", "3 is not a string"),
    ("description = []\n" + STEP, "description", "[] is not a string"),
    ("step = [1]\n", "step 1", "1 is not a table ([[step]])"),
    ('[[step]]\ncontrol = "dma"\nvalue = "x"\n', "step 1: at", 'missing: when the step runs (e.g. at = "500ms")'),
    ('[[step]]\nat = "soon"\ncontrol = "dma"\nvalue = "x"\n', "step 1: at",
     "'soon' is not a duration (seconds, or e.g. \"250us\", \"500ms\", \"2s\", \"1min\")"),
    ('[[step]]\nat = "5h"\ncontrol = "dma"\nvalue = "x"\n', "step 1: at",
     "'5h' is not a duration (seconds, or e.g. \"250us\", \"500ms\", \"2s\", \"1min\")"),
    ('[[step]]\nat = true\ncontrol = "dma"\nvalue = "x"\n', "step 1: at",
     "True is not a duration (seconds, or e.g. \"250us\", \"500ms\", \"2s\", \"1min\")"),
    ('[[step]]\nat = -1\ncontrol = "dma"\nvalue = "x"\n', "step 1: at", "-1 is outside 0 s .. a week"),
    ('[[step]]\nat = nan\ncontrol = "dma"\nvalue = "x"\n', "step 1: at", "nan is outside 0 s .. a week"),
    ('[[step]]\nat = inf\ncontrol = "dma"\nvalue = "x"\n', "step 1: at", "inf is outside 0 s .. a week"),
    ('[[step]]\nat = 0\nvalue = "x"\n', "step 1: write",
     "a step has exactly one of write (a file's path) or control (a control's name)"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nwrite = "/sys/x"\nvalue = "x"\n', "step 1: write",
     "a step has exactly one of write (a file's path) or control (a control's name)"),
    ('[[step]]\nat = 0\ncontrol = "../dma"\nvalue = "x"\n', "step 1: control",
     "'../dma' is not a control's name (dma, traffic, carrier, ...)"),
    ('[[step]]\nat = 0\ncontrol = 3\nvalue = "x"\n', "step 1: control",
     "3 is not a control's name (dma, traffic, carrier, ...)"),
    ('[[step]]\nat = 0\nwrite = "sys/bus/pci/rescan"\nvalue = 1\n', "step 1: write",
     "'sys/bus/pci/rescan' is not an absolute path (e.g. \"/sys/bus/pci/rescan\")"),
    ('[[step]]\nat = 0\nwrite = 7\nvalue = 1\n', "step 1: write",
     "7 is not an absolute path (e.g. \"/sys/bus/pci/rescan\")"),
    ('[[step]]\nat = 0\nwrite = "/sys/\\u0000x"\nvalue = 1\n', "step 1: write", "'/sys/\\x00x' is not a valid path"),
    ('[[step]]\nat = 0\ncontrol = "dma"\n', "step 1: value", "missing: what the step writes"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = []\n', "step 1: value", "an empty list: give at least one value"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = true\n', "step 1: value", "True is not a string or an integer"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = 1.5\n', "step 1: value", "1.5 is not a string or an integer"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = ["a", {x = 1}]\n', "step 1: value",
     "{'x': 1} is not a string or an integer"),
    (f'[[step]]\nat = 0\ncontrol = "dma"\nvalue = "{"x" * 4096}"\n', "step 1: value",
     "4097 bytes: one write to a sysfs file takes at most 4096"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\ncount = 0\nevery = 1\n', "step 1: count",
     "0 is not a number of runs 1..1000000"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\ncount = 1000001\nevery = 1\n', "step 1: count",
     "1000001 is not a number of runs 1..1000000"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\ncount = "3"\nevery = 1\n', "step 1: count",
     "'3' is not a number of runs 1..1000000"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\ncount = 3\n', "step 1: every",
     "missing: the step runs 3 times: say how far apart (e.g. every = \"100ms\")"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = ["a", "b"]\n', "step 1: every",
     "missing: the step runs 2 times: say how far apart (e.g. every = \"100ms\")"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nevery = "1s"\n', "step 1: count",
     "missing: a repeated step (every) says how many times it runs"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nevery = 0\ncount = 2\n', "step 1: every",
     "0 is outside 1e-06 s .. a week"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nevery = "1min"\ncount = 1000000\n', "step 1: count",
     "the last run would be at 5.99999e+07 s, past a week"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nexpect = "EWHATEVER"\n', "step 1: expect",
     "'EWHATEVER' is not an errno name (EBUSY, EINVAL, ENODEV, ...)"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nexpect = 16\n', "step 1: expect",
     "16 is not an errno name (EBUSY, EINVAL, ENODEV, ...)"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nexpect = "errorcode"\n', "step 1: expect",
     "'errorcode' is not an errno name (EBUSY, EINVAL, ENODEV, ...)"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\non_error = "abort"\n', "step 1: on_error",
     "'abort' is not continue or stop"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nnote = 1\n', "step 1: note", "1 is not a string"),
    ('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\nevry = 1\n', "step 1: evry",
     "unknown field (known: at, control, count, every, expect, note, on_error, value, write)"),
    (STEP + '[[step]]\nat = 2\ncontrol = "dma"\nvalue = "x"\n' + '[[step]]\nat = "1s"\ncontrol = "dma"\nvalue = "x"\n',
     "step 3: at", "1 s is before step 2's 2 s (list the steps in time order)"),
]


@pytest.mark.parametrize("text, where, message", BAD, ids=[f"{w}: {m[:30]}" for _, w, m in BAD])
def test_every_mistake_is_reported_by_step_and_field(text, where, message):
    with pytest.raises(ScenarioError) as e:
        parse(text, "bad.toml")
    assert (e.value.source, e.value.where, e.value.message) == ("bad.toml", where, message)
    assert str(e.value) == f"bad.toml: {where}: {message}"


def test_files_that_are_not_scenarios(tmp_path):
    with pytest.raises(ScenarioError) as e:
        scenario.load(tmp_path / "none.toml")
    assert str(e.value) == f"{tmp_path}/none.toml: No such file or directory"
    (tmp_path / "bin.toml").write_bytes(b"name = '\xff'\n")
    with pytest.raises(ScenarioError, match=r"bin.toml: not UTF-8 text \(byte 0xff at offset 8\)"):
        scenario.load(tmp_path / "bin.toml")
    (tmp_path / "bad.toml").write_text("[[step]\n")
    with pytest.raises(ScenarioError, match=r"bad.toml: not valid TOML: "):
        scenario.load(tmp_path / "bad.toml")
