"""The kernel's CPU set formats ("%*pb", "%*pbl") and seed-vtd's /sys/devices/system view."""
import errno

import pytest

from tests.view.test_view import show, store, walk
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.cpumask import cpulist, cpumap
from vfakefs.sysfs.nodes import Dir, Link


@pytest.mark.parametrize("cpus, nbits, text", [
    ([0, 1], 2, "3\n"),                     # the reference's local_cpus on 2 CPUs
    ([], 2, "0\n"),
    ([0], 16, "0001\n"),                    # the first word as wide as its bits need, zero-padded
    ([4, 5, 6, 7, 12, 13, 14, 15], 16, "f0f0\n"),
    (range(32), 32, "ffffffff\n"),
    ([32], 33, "1,00000000\n"),
    (range(8), 40, "00,000000ff\n"),
    ([0, 63, 64], 72, "01,80000000,00000001\n"),
])
def test_cpumap_prints_32_bit_words_as_bitmap_string(cpus, nbits, text):
    assert cpumap(cpus, nbits) == text


@pytest.mark.parametrize("cpus, text", [
    ([0, 1, 2, 3, 8, 9, 10, 11], "0-3,8-11\n"), ([5], "5\n"), ([1, 3], "1,3\n"), ([], "\n"), ([3, 0, 2, 1], "0-3\n"),
])
def test_cpulist_prints_ranges_as_bitmap_list_string(cpus, text):
    assert cpulist(cpus) == text


def test_seed_has_two_nodes_one_cpu_each(seed):
    base = "sys/devices/system"
    assert show(seed, f"{base}/cpu/online") == "0-1\n"
    assert show(seed, f"{base}/cpu/cpu1/topology/physical_package_id") == "1\n"
    assert show(seed, f"{base}/cpu/cpu1/topology/package_cpus") == "2\n"
    assert show(seed, f"{base}/cpu/cpu1/cache/index3/shared_cpu_list") == "1\n"
    assert walk(seed, f"{base}/cpu/cpu1/node1") == Link("../../node/node1")
    assert "online" not in walk(seed, f"{base}/cpu/cpu0").entries()       # cpu0 is not hotpluggable
    assert show(seed, f"{base}/node/node1/cpumap") == "2\n"
    assert show(seed, f"{base}/node/node0/distance") == "10 21\n"
    assert walk(seed, f"{base}/node/node1/cpu1") == Link("../../cpu/cpu1")
    assert show(seed, f"{base}/node/has_cpu") == "0-1\n"
    assert walk(seed, "sys/bus/node/devices/node0") == Link("../../../devices/system/node/node0")


def test_devices_and_buses_follow_their_node(seed):
    x540 = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0"
    gpu = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
    assert [show(seed, f"{x540}/{a}") for a in ("numa_node", "local_cpus", "local_cpulist")] == ["1\n", "2\n", "1\n"]
    assert [show(seed, f"{gpu}/{a}") for a in ("numa_node", "local_cpus", "local_cpulist")] == ["0\n", "1\n", "0\n"]
    assert show(seed, "sys/devices/pci0000:00/0000:00:1c.0/pci_bus/0000:03/cpulistaffinity") == "1\n"
    assert show(seed, "sys/devices/pci0000:00/pci_bus/0000:00/cpuaffinity") == "1\n"
    store(seed, f"{x540}/numa_node", "-1")           # NUMA_NO_NODE: every online CPU
    assert show(seed, f"{x540}/local_cpus") == "3\n"
    # the bus keeps its node: cpumask_of_pcibus() asks the bus, not the device
    assert show(seed, "sys/devices/pci0000:00/0000:00:1c.0/pci_bus/0000:03/cpuaffinity") == "2\n"


def test_cpu_online_store(seed):
    path = "sys/devices/system/cpu/cpu1/online"
    store(seed, path, "1\n")                          # already online: nothing to do
    for text, err in (("0", errno.EBUSY), ("x", errno.EINVAL)):
        with pytest.raises(SysfsError) as e:
            store(seed, path, text)
        assert e.value.errno == err
    assert show(seed, path) == "1\n" and show(seed, "sys/devices/system/cpu/offline") == "\n"


def test_qemu_has_no_cache_directory_and_one_faked_node(qemu):
    assert "cache" not in walk(qemu, "sys/devices/system/cpu/cpu0").entries()
    assert isinstance(walk(qemu, "sys/devices/system/node/node0"), Dir)
    assert show(qemu, "sys/devices/system/node/node0/meminfo").startswith(
        "Node 0 MemTotal:        1047996 kB\nNode 0 MemFree:         1047996 kB\n")
    assert "SecPageTables" not in show(qemu, "sys/devices/system/node/node0/meminfo")     # 6.3+
    assert show(qemu, "sys/devices/system/cpu/cpu1/topology/cluster_id") == "65535\n"     # AMD: not set


def test_node_states_of_a_cpuless_and_a_memoryless_node():
    from vfakefs.model import topology
    from vfakefs.sysfs.tree import View
    host = '[[device]]\nbdf = "0000:00:00.0"\nkind = "host_bridge"\nvendor = 1\ndevice = 2\nclass = 0x060000\n'
    v = View(topology.from_text('cpus = 2\n[[numa_node]]\ncpus = "0-1"\nmemory = 0\n'
                                '[[numa_node]]\ncpus = ""\nmemory = "4G"\n' + host))
    got = {n: show(v, f"sys/devices/system/node/{n}") for n in ("possible", "online", "has_cpu", "has_memory",
                                                                  "has_normal_memory")}
    assert got == {"possible": "0-1\n", "online": "0-1\n", "has_cpu": "0\n", "has_memory": "1\n",
                   "has_normal_memory": "1\n"}
    assert show(v, "sys/devices/system/node/node1/cpulist") == "\n"
    assert show(v, "sys/devices/system/node/node1/cpumap") == "0\n"
