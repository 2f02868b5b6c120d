"""The locality a topology declares ([cpu], [[numa_node]], a device's numa_node): what it
builds, and one TopologyError naming the field for every bad declaration."""
import errno

import pytest

from vfakefs.model import topology
from vfakefs.model.errors import SysfsError, TopologyError
from vfakefs.model.kmsg import KERN_ALERT
from vfakefs.model.locality import override_numa_node, parse_cpulist

HOST = '[[device]]\nbdf = "0000:00:00.0"\nkind = "host_bridge"\nvendor = 0x8086\ndevice = 0x2020\nclass = 0x060000\n'
PORT = '[[device]]\nbdf = "0000:00:1c.0"\nkind = "root_port"\nvendor = 0x8086\ndevice = 0xa110\nclass = 0x060400\n'
EP = '[[device]]\nbdf = "0000:01:00.0"\nparent = "0000:00:1c.0"\nkind = "endpoint"\nvendor = 0x8086\n' \
     'device = 0x10d3\nclass = 0x020000\n'
HOST1 = HOST.replace("0000:00:00.0", "0001:00:00.0")
TWO_BY_FOUR = "[cpu]\nsockets = 2\ncores = 4\nthreads = 2\n"
TWO_NODES = '[[numa_node]]\nbuses = ["0000:00"]\n[[numa_node]]\n'


def load(top: str, devices: str = HOST + PORT + EP):
    return topology.from_text(top + devices, "t.toml")


def node_of(m, bdf: str) -> int:
    return next(f.numa_node for f in m.functions if f.name == bdf)


def test_nothing_declared_is_one_node_with_every_cpu_and_devices_without_a_node():
    m = load("cpus = 4\n")
    loc = m.locality
    assert (loc.sockets, loc.cores, loc.threads, loc.nr_cpus, m.nr_cpus) == (1, 4, 1, 4, 4)
    assert not loc.numa and [n.cpus for n in loc.nodes] == [(0, 1, 2, 3)]
    assert loc.nodes[0].memory == 1 << 30 and loc.nodes[0].distance == (10,)
    assert {f.numa_node for f in m.functions} == {-1}
    assert loc.node_cpus(-1) == [0, 1, 2, 3]            # NUMA_NO_NODE: every online CPU


def test_cpus_count_threads_last_as_the_madt_lists_them():
    loc = load(TWO_BY_FOUR).locality
    assert loc.nr_cpus == 16
    assert [(c.package, c.core, c.thread) for c in loc.cpus[:5]] == [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0),
                                                                     (1, 0, 0)]
    assert (loc.cpus[8].package, loc.cpus[8].core, loc.cpus[8].thread) == (0, 0, 1)
    assert loc.core_cpus(9) == [1, 9] and loc.package_cpus(12) == [4, 5, 6, 7, 12, 13, 14, 15]
    # APIC ids: package | core (2 bits) | thread (1 bit)
    assert [loc.cpus[i].apicid for i in (0, 1, 8, 9, 4, 15)] == [0, 2, 1, 3, 8, 15]


def test_one_node_per_socket_takes_its_package_and_the_root_bus_places_devices():
    m = load(TWO_BY_FOUR + TWO_NODES)
    loc = m.locality
    assert loc.numa and [n.cpus for n in loc.nodes] == [(0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)]
    assert [n.distance for n in loc.nodes] == [(10, 20), (20, 10)]       # no SLIT: 10 local, 20 remote
    assert [node_of(m, b) for b in ("0000:00:00.0", "0000:00:1c.0", "0000:01:00.0")] == [0, 0, 0]


def test_a_ports_numa_node_covers_its_subtree_and_its_buses():
    m = load(TWO_BY_FOUR + TWO_NODES, HOST + PORT + "numa_node = 1\n" + EP)
    assert [node_of(m, b) for b in ("0000:00:00.0", "0000:00:1c.0", "0000:01:00.0")] == [0, 1, 1]
    port = next(f for f in m.functions if f.name == "0000:00:1c.0")
    assert m.locality.bus_node(None, 0) == 0 and m.locality.bus_node(port, 0) == 1


def test_a_root_bus_without_a_node_leaves_its_devices_without_one():
    m = load(TWO_BY_FOUR + '[[numa_node]]\n[[numa_node]]\nbuses = ["0001:00"]\n', HOST + PORT + EP + HOST1)
    assert node_of(m, "0000:01:00.0") == -1 and node_of(m, "0001:00:00.0") == 1


def test_nodes_name_their_cpus_memory_and_distances():
    m = load(TWO_BY_FOUR + '[[numa_node]]\ncpus = "0-7"\nmemory = "16G"\ndistance = [10, 21]\n'
                           '[[numa_node]]\ncpus = "8-15"\nmemory = 0\ndistance = [21, 10]\n')
    n0, n1 = m.locality.nodes
    assert (n0.cpus, n0.memory, n0.distance) == (tuple(range(8)), 16 << 30, (10, 21))
    assert (n1.cpus, n1.memory) == (tuple(range(8, 16)), 0)            # a memoryless node
    assert m.locality.cpus[12].node == 1


def test_a_node_without_cpus_has_memory_only():
    m = load("cpus = 2\n" + '[[numa_node]]\ncpus = "0-1"\n[[numa_node]]\ncpus = ""\nmemory = "64G"\n')
    assert [(n.cpus, n.memory) for n in m.locality.nodes] == [((0, 1), 1 << 30), ((), 64 << 30)]


def test_presets_declare_their_locality():
    seed = topology.load("seed-vtd")
    assert (seed.locality.sockets, seed.nr_cpus, len(seed.locality.nodes)) == (2, 2, 2)
    assert {f.name: f.numa_node for f in seed.functions if f.name in
            ("0000:01:00.0", "0000:03:00.0", "0000:0c:00.0", "0000:06:00.0")} == \
        {"0000:01:00.0": 0, "0000:03:00.0": 1, "0000:0c:00.0": 1, "0000:06:00.0": 0}
    qemu = topology.load("qemu-ref")         # "No NUMA configuration found", 2 CPUs, 1 package
    assert (qemu.locality.numa, qemu.nr_cpus, qemu.locality.sockets) == (False, 2, 1)
    assert {f.numa_node for f in qemu.functions} == {-1}
    assert qemu.locality.nodes[0].memory == 1047996 << 10


@pytest.mark.parametrize("top, devices, where, words", [
    ("cpus = 8\n" + TWO_BY_FOUR, None, "cpus", "8 is not sockets x cores x threads = 2 x 4 x 2 = 16"),
    ("[cpu]\nsockets = 0\n", None, "cpu.sockets", "out of range"),
    ("[cpu]\nthreads = 9\n", None, "cpu.threads", "out of range"),
    ("[cpu]\ncolour = 1\n", None, "cpu", "unknown key 'colour'"),
    ("[cpu]\nsockets = 3\ncores = 100\nthreads = 2\n", None, "cpu", "3 x 100 x 2 = 600 CPUs, more than 512"),
    ("[cpu]\naddress_sizes = [46]\n", None, "cpu.address_sizes", "expected [physical bits, virtual bits]"),
    ("[cpu]\ncaches = [{ level = 1, ways = 8 }]\n", None, "cpu.caches[0]", "missing required key 'size'"),
    ('[cpu]\ncaches = [{ level = 1, type = "Weird", size = "32K", ways = 8 }]\n', None, "cpu.caches[0].type",
     "is not one of Data, Instruction, Unified"),
    ('[cpu]\ncaches = [{ level = 2, size = 1000, ways = 8 }]\n', None, "cpu.caches[0].size",
     "1000 is not a multiple of 512 bytes"),
    ('[cpu]\ncaches = [{ level = 1, type = "Data", size = "32K", ways = 8 }, '
     '{ level = 1, type = "Data", size = "48K", ways = 12 }]\n', None, "cpu.caches[1]", "a second level 1 Data cache"),
    ('[cpu]\ncaches = [{ level = 3, size = "8M", ways = 16, shared = "rack" }]\n', None, "cpu.caches[0].shared",
     "is not one of core, package, thread"),
    ("numa_node = 3\n", None, "numa_node", "expected [[numa_node]] tables, one per node"),
    (TWO_BY_FOUR + '[[numa_node]]\ncpus = "0-x"\n[[numa_node]]\n', None, "numa_node[0].cpus",
     "'0-x' is not a CPU list"),
    (TWO_BY_FOUR + '[[numa_node]]\ncpus = "3-1"\n[[numa_node]]\n', None, "numa_node[0].cpus",
     "range end below its start"),
    (TWO_BY_FOUR + '[[numa_node]]\ncpus = "0-16"\n[[numa_node]]\n', None, "numa_node[0].cpus",
     "CPU 16 is past the last CPU (15)"),
    (TWO_BY_FOUR + '[[numa_node]]\ncpus = "0-8"\n[[numa_node]]\ncpus = "8-15"\n', None, "numa_node[1].cpus",
     "CPU 8 is also node 0's"),
    (TWO_BY_FOUR + '[[numa_node]]\ncpus = "0-7"\n[[numa_node]]\ncpus = "8-14"\n', None, "numa_node",
     "CPU 15 is in no node"),
    (TWO_BY_FOUR + '[[numa_node]]\n[[numa_node]]\n[[numa_node]]\n', None, "numa_node[0].cpus",
     "missing: 3 nodes for 2 sockets, so each node names its CPUs"),
    (TWO_BY_FOUR + '[[numa_node]]\nbuses = ["0000:80"]\n[[numa_node]]\n', None, "numa_node[0].buses",
     "'0000:80' is not a root bus of this topology (root buses: 0000:00)"),
    (TWO_BY_FOUR + '[[numa_node]]\nbuses = ["0000:00"]\n[[numa_node]]\nbuses = ["0000:00"]\n', None,
     "numa_node[1].buses", "'0000:00' is also node 0's"),
    (TWO_BY_FOUR + '[[numa_node]]\ndistance = [10]\n[[numa_node]]\n', None, "numa_node[0].distance",
     "1 distances for 2 nodes"),
    (TWO_BY_FOUR + '[[numa_node]]\ndistance = [11, 20]\n[[numa_node]]\n', None, "numa_node[0].distance",
     "distance to node 0 is 11: local must be 10, remote above 10"),
    (TWO_BY_FOUR + '[[numa_node]]\n[[numa_node]]\ndistance = [10, 10]\n', None, "numa_node[1].distance",
     "distance to node 0 is 10"),
    (TWO_BY_FOUR + '[[numa_node]]\nmemory = "lots"\n[[numa_node]]\n', None, "numa_node[0].memory",
     "'lots' is not a size"),
    (TWO_BY_FOUR + '[[numa_node]]\nmemory = 1000\n[[numa_node]]\n', None, "numa_node[0].memory",
     "1000 is not a multiple of 4096 bytes"),
    (TWO_BY_FOUR + '[[numa_node]]\ncolour = 1\n[[numa_node]]\n', None, "numa_node[0]", "unknown key 'colour'"),
    ('memory = "4G"\n' + TWO_BY_FOUR + TWO_NODES, None, "memory", "each node declares its own memory"),
    (TWO_BY_FOUR + TWO_NODES, HOST + PORT + EP + "numa_node = 2\n", "device #3 (0000:01:00.0).numa_node",
     "node 2 is not declared (nodes: 0..1; [[numa_node]])"),
    ("", HOST + PORT + "numa_node = 1\n" + EP, "device #2 (0000:00:1c.0).numa_node",
     "node 1 is not declared (nodes: 0..0"),
])
def test_bad_declarations_are_one_error_naming_the_field(top, devices, where, words):
    with pytest.raises(TopologyError) as e:
        load(top, devices if devices is not None else HOST + PORT + EP)
    assert str(e.value).startswith(f"t.toml: {where}: "), str(e.value)
    assert words in str(e.value)


def test_cpulists_parse_as_bitmap_parselist():
    assert parse_cpulist("0-3,8-11") == [0, 1, 2, 3, 8, 9, 10, 11]
    assert parse_cpulist(" 5 ") == [5]
    assert parse_cpulist("") == []
    for bad in ("1,", "a", "1--2", "-1", ","):
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_numa_node_override_takes_online_nodes_with_the_firmware_bug_alert():
    m = topology.load("seed-vtd")
    x540 = next(f for f in m.functions if f.name == "0000:03:00.0")
    for bad in (2, 5, -2, 1024):
        with pytest.raises(SysfsError) as e:
            override_numa_node(m, x540, bad)
        assert e.value.errno == errno.EINVAL
        assert x540.numa_node == 1                       # unchanged
    assert not any("Overriding NUMA node" in r.text for r in m.kmsg.records)
    override_numa_node(m, x540, 0)
    assert x540.numa_node == 0
    rec = m.kmsg.records[-1]
    assert (rec.level, rec.text) == (KERN_ALERT, "ixgbe 0000:03:00.0: [Firmware Bug]: Overriding NUMA node to 0.  "
                                                 "Contact your vendor for updates.")
    override_numa_node(m, x540, -1)
    assert x540.numa_node == -1
