import pytest

from vfakefs.model import topology
from vfakefs.model.errors import TopologyError

HOST = """
[[device]]
bdf = "0000:00:00.0"
kind = "host_bridge"
vendor = 0x8086
device = 0x29c0
class = 0x060000
"""


def load(extra: str):
    return topology.from_text(HOST + extra, "t.toml")


@pytest.mark.parametrize("extra, where, words", [
    ('[[device]]\nbdf = "0000:00:02.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\ncolour = 1\n',
     "device #2 (0000:00:02.0)", "unknown key 'colour'"),
    ('[[device]]\nbdf = "0000:00:2.0.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\n',
     "device #2 (0000:00:2.0.0).bdf", "malformed BDF"),
    ('[[device]]\nbdf = "0000:00:00.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\n',
     "device #2 (0000:00:00.0).bdf", "duplicate BDF"),
    ('[[device]]\nbdf = "0000:05:00.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\n',
     "device #2 (0000:05:00.0)", "parent missing"),
    ('[[device]]\nbdf = "0000:00:02.0"\nkind = "endpoint"\nvendor = 0x10000\ndevice = 2\nclass = 3\n',
     "device #2 (0000:00:02.0).vendor", "out of range"),
    ('[[device]]\nbdf = "0000:01:00.0"\nparent = "0000:00:00.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\n',
     "device #2 (0000:01:00.0).parent", "not a bridge"),
    ('[[device]]\nbdf = "0000:00:02.0"\nkind = "endpoint"\nvendor = 1\ndevice = 2\nclass = 3\ndriver = "nosuch"\n',
     "device #2 (0000:00:02.0).driver", "unknown driver"),
])
def test_errors_name_file_device_and_field(extra, where, words):
    with pytest.raises(TopologyError) as e:
        load(extra)
    assert str(e.value).startswith(f"t.toml: {where}: ")
    assert words in str(e.value)


def test_unknown_preset_and_bad_toml():
    with pytest.raises(TopologyError, match="no such preset"):
        topology.load("nosuch")
    with pytest.raises(TopologyError, match="not valid TOML"):
        topology.from_text("[[device]\n", "t.toml")


def test_presets_load_and_satisfy_invariants():
    for name in topology.presets():
        m = topology.load(name)
        m.check()
        assert m.functions


def test_remove_and_rescan_keep_invariants():
    m = topology.load("seed-vtd")
    port = next(f for f in m.functions if f.name == "0000:00:1d.0")
    before = {f.name for f in m.functions}
    gen = m.generation
    m.remove_function(port)
    m.check()
    gone = before - {f.name for f in m.functions}
    assert gone == {"0000:00:1d.0", "0000:04:00.0", "0000:05:00.0", "0000:05:01.0", "0000:06:00.0", "0000:07:00.0"}
    assert m.generation > gen
    m.rescan()
    m.check()
    assert {f.name for f in m.functions} == before
