import pytest

from vfakefs.model import bringup, topology
from vfakefs.model.errors import TopologyError
from vfakefs.model.host import Host
from vfakefs.model.pci import sriov

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


# --- every malformed file is one TopologyError naming file, device and field --------------------
EP = '[[device]]\nbdf = "0000:01:00.0"\nparent = "0000:00:1c.0"\nkind = "endpoint"\nvendor = 0x8086\n' \
     'device = 0x1528\nclass = 0x020000\n'
PORT = '[[device]]\nbdf = "0000:00:1c.0"\nkind = "root_port"\nvendor = 0x8086\ndevice = 0xa110\nclass = 0x060400\n'
SRIOV = 'driver = "ixgbe"\nsriov = { total_vfs = %d, offset = 128, stride = 2, vf_device = 0x1515 }\n'


@pytest.mark.parametrize("extra, where, words", [
    (PORT + EP.replace("vendor = 0x8086", 'vendor = "intel"'), "device #3 (0000:01:00.0).vendor", "not an integer"),
    (PORT + EP.replace("vendor = 0x8086", "vendor = true"), "device #3 (0000:01:00.0).vendor", "not an integer"),
    (PORT + EP + "numa_node = -2\n", "device #3 (0000:01:00.0).numa_node", "out of range"),
    (PORT + EP + "irq = 99999999999999999999\n", "device #3 (0000:01:00.0).irq", "out of range"),
    (PORT + EP + "irq = 9223372036854775807\n", "device #3 (0000:01:00.0).irq", "out of range"),
    (PORT + EP + "bars = 1\n", "device #3 (0000:01:00.0).bars", "not a list"),
    (PORT + EP + "bars = [1]\n", "device #3 (0000:01:00.0).bars[0]", "not a table"),
    (PORT + EP + 'bars = [{ size = "huge" }]\n', "device #3 (0000:01:00.0).bars[0].size", "not a number"),
    (PORT + EP + "bars = [{ size = -4096 }]\n", "device #3 (0000:01:00.0).bars[0].size", "power of two"),
    (PORT + EP + "bars = [{ size = 0 }]\n", "device #3 (0000:01:00.0).bars[0].size", "power of two"),
    (PORT + EP + 'bars = [{ type = "mem64", size = "32T" }]\n',
     "device #3 (0000:01:00.0).bars[0].size", "larger than"),
    (PORT + EP + "bars = [{ size = 4096, index = 0 }, { size = 4096, index = 0 }]\n",
     "device #3 (0000:01:00.0).bars[1].index", "given twice"),
    (PORT + EP + 'sriov = 1\n', "device #3 (0000:01:00.0).sriov", "not a table"),
    (PORT + EP + 'sriov = { total_vfs = -1, offset = 1, stride = 1, vf_device = 1 }\n',
     "device #3 (0000:01:00.0).sriov.total_vfs", "out of range"),
    (PORT + EP + 'sriov = { offset = 1, stride = 1, vf_device = 1 }\n',
     "device #3 (0000:01:00.0).sriov", "missing required key 'total_vfs'"),
    (PORT + EP + 'link = { speed = 3 }\n', "device #3 (0000:01:00.0).link.speed", "not a PCIe speed"),
    (PORT + EP + 'link = "fast"\n', "device #3 (0000:01:00.0).link", "not a table"),
    (PORT + EP + 'msi_irqs = [1, 2]\n', "device #3 (0000:01:00.0).msi_irqs", "expected [first irq"),
    (PORT + EP + 'netdev = "eth0/x"\n', "device #3 (0000:01:00.0).netdev", "not a name"),
    (PORT + EP + 'netdev = "eth0"\n', "device #3 (0000:01:00.0).netdev", "needs a bound driver"),
    (PORT + EP + 'driver = "ixgbe"\nnetdev = "eth0"\n' + EP.replace("01:00.0", "01:00.1") +
     'driver = "ixgbe"\nnetdev = "eth0"\n', "device #4 (0000:01:00.1).netdev", "'eth0' is also device #3"),
    (PORT + EP + 'mac = "nope"\n', "device #3 (0000:01:00.0).mac", "not a MAC"),
    (PORT + EP + 'reset_methods = ["reboot"]\n', "device #3 (0000:01:00.0).reset_methods", "not one of"),
    (PORT + EP + 'firmware_node = "../../etc"\n', "device #3 (0000:01:00.0).firmware_node", "without '..'"),
    (PORT + EP + 'rom = { size = "32M" }\n', "device #3 (0000:01:00.0).rom.size", "larger than"),
    (PORT + "subordinate_bus = 0x100\n" + EP, "device #2 (0000:00:1c.0).subordinate_bus", "out of range"),
    (PORT + "secondary_bus = 5\n" + EP, "device #2 (0000:00:1c.0).secondary_bus", "not its children's bus"),
    (PORT + "subordinate_bus = 0\n" + EP, "device #2 (0000:00:1c.0).subordinate_bus", "does not cover"),
    (PORT + EP.replace('parent = "0000:00:1c.0"', 'parent = "0000:01:00.0"'), "device #3 (0000:01:00.0).parent",
     "not a bridge"),
    (PORT + EP + SRIOV % 4 + EP.replace("01:00.0", "01:10.2"), "device #3 (0000:01:00.0).sriov",
     "VF 1 would be 0000:01:10.2, which is device #4"),
    (PORT + "sriov = { total_vfs = 1, offset = 1, stride = 1, vf_device = 1 }\n", "device #2 (0000:00:1c.0).sriov",
     "SR-IOV needs a PCIe endpoint"),
    ('cpus = "two"\n', "cpus", "not an integer"),
    ('drivers = ["a/b"]\n', "drivers", "not a name"),
    ('[iommu]\niotlb_entries = 0\n', "iommu.iotlb_entries", "out of range"),
    ('device = 1\n', "device", "not a list"),
])
def test_malformed_fields_name_file_device_and_field(extra, where, words):
    with pytest.raises(TopologyError) as e:
        if extra.startswith(("cpus", "drivers", "[iommu]", "device =")):
            topology.parse_text(extra + ("" if extra.startswith("device") else HOST), "t.toml")
        else:
            load(extra)
    assert str(e.value).startswith(f"t.toml: {where}: " if where else "t.toml: "), str(e.value)
    assert "\n" not in str(e.value)
    if words:
        assert words in str(e.value)


CYCLE = '''
[[device]]
bdf = "0000:01:00.0"
parent = "0000:02:00.0"
kind = "root_port"
vendor = 0x8086
device = 0xa110
class = 0x060400

[[device]]
bdf = "0000:02:00.0"
parent = "0000:01:00.0"
kind = "root_port"
vendor = 0x8086
device = 0xa110
class = 0x060400
'''


def test_cyclic_parents_are_one_error():
    with pytest.raises(TopologyError) as e:
        load(CYCLE)
    assert str(e.value) == ("t.toml: device #2 (0000:01:00.0).parent: 0000:01:00.0 cannot sit below 0000:02:00.0: "
                            "its bus must be above bus 02, in domain 0000")


def test_non_utf8_file_is_one_error(tmp_path):
    p = tmp_path / "t.toml"
    p.write_bytes(HOST.encode() + b'comment = "\xff\xfe"\n')
    with pytest.raises(TopologyError) as e:
        topology.load(str(p))
    assert str(e.value) == f"{p}: not UTF-8 text (byte 0xff at offset {len(HOST) + 11})"


@pytest.mark.parametrize("content, words", [
    (bytes(range(256)) * 4, "not a text hex dump (byte 0x80 at offset 128)"),
    (b"root:$y$j9T$abc:19000:0:99999:7:::\n", "line 1 is not a hexdump -C or lspci -xxx line"),
    (b"", "no hex dump lines"),
    (b"00: 86 80 00 00\n00: 86 80 00 00\n", "line 2: offset 0x0 is not the next multiple of 16"),
    (b"100: 86 80 00 00\n", "line 1: offset 0x100 is past the 256-byte config space"),
])
def test_config_that_is_not_a_dump_is_refused(tmp_path, content, words):
    (tmp_path / "cfg").write_bytes(content)
    text = HOST.replace('kind = "host_bridge"', 'kind = "pci_endpoint"') + 'config = "cfg"\n'
    with pytest.raises(TopologyError) as e:
        topology.from_text(text, "t.toml", tmp_path)
    assert str(e.value).startswith(f"t.toml: device #1 (0000:00:00.0).config: {tmp_path / 'cfg'}: "), str(e.value)
    assert words in str(e.value)


def test_config_from_another_file_is_refused(tmp_path):
    text = HOST + 'config = "/etc/passwd"\n'
    with pytest.raises(TopologyError, match=r"t.toml: device #1 \(0000:00:00.0\).config: /etc/passwd: line 1 is not"):
        topology.from_text(text, "t.toml", tmp_path)


def test_lspci_xxx_dump_is_read(tmp_path):
    (tmp_path / "cfg").write_text("00:00.0 Host bridge: Intel Corporation Device 3e30\n"
                                  "00: 86 80 30 3e 06 00 90 20 0d 00 00 06 00 00 00 00\n"
                                  "10: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n"
                                  "20: 00 00 00 00 00 00 00 00 00 00 00 00 62 14 19 7b\n")
    m = topology.from_text(HOST + 'config = "cfg"\n', "t.toml", tmp_path)
    cfg = m.functions[0].config
    assert (cfg.r16(0), cfg.r16(2), cfg.r16(0x2C), cfg.r8(0x40)) == (0x8086, 0x3E30, 0x1462, 0)


def test_vfs_past_bus_ff_load_with_the_range_ending_at_ff():
    m = load(PORT + EP + SRIOV % 65535)
    port = m.lookup("0000:00:1c.0")
    assert (port.secondary, port.subordinate, port.config.r8(0x1A)) == (1, 0xFF, 0xFF)


# --- load, boot, reset: three steps -----------------------------------------------------------------
def test_parse_reads_files_once_and_boots_equal_machines():
    topo = topology.parse("qemu-ref")
    a, b = bringup.boot(topo), bringup.boot(topo)
    assert a is not b and a.topology is topo is b.topology
    assert [f.name for f in a.functions] == [f.name for f in b.functions]
    assert [bytes(f.config.bytes) for f in a.functions] == [bytes(f.config.bytes) for f in b.functions]
    assert not set(map(id, a.functions)) & set(map(id, b.functions))


def test_reset_boots_a_fresh_machine_and_keeps_log_and_listeners():
    host = Host(topology.load("seed-vtd"))
    old = host.machine
    heard = []
    host.subscribe(lambda: heard.append(host.machine.generation))
    pf = old.lookup("0000:03:00.0")
    sriov.configure(old, pf, 4)
    old.fault_threshold = 3
    gen, seq = old.generation, old.kmsg.next_seq
    host.reset()
    new = host.machine
    assert new is not old and new.kmsg is old.kmsg
    assert new.generation > gen and heard[-1] == new.generation
    assert new.lookup("0000:03:00.0").sriov.num_vfs == 0 and new.fault_threshold == 100
    assert [r.text for r in new.kmsg.records[seq - new.kmsg.first_seq:]] == ["vfakefs: machine reset to its topology"]
    new.check()
    assert all(f.machine is new for f in new.functions) and all(g.machine is new for g in new.groups.by_id.values())
    sriov.configure(new, new.lookup("0000:03:00.0"), 2)     # the new machine is live and heard
    assert heard[-1] == new.generation
