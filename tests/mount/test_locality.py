"""Locality on a real mount: /sys/devices/system/cpu and node with the kernel's modes and
formats, each device's numa_node, local_cpus and local_cpulist, /proc/cpuinfo; and the
unmodified clients that read them: util-linux lscpu (--sysroot) and Debian's hwloc 2.9
lstopo-no-graphics (HWLOC_FSROOT=MNT, and plain inside `vfakefs run`)."""
from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.clients import client
from tests.conftest import REPO, make_mountpoint, mounted, preset_devices, run, sh

TWO_SOCKET = REPO / "tests/mount/topologies/two-socket.toml"
CPU, NODE = "sys/devices/system/cpu", "sys/devices/system/node"
LIST_SIZE = 8192 * 7 // 2          # CPULIST_FILE_MAX_BYTES for NR_CPUS=8192


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """2 sockets x 4 cores x 2 threads, a node per socket, PCI segment 0000 on node 0 (with
    a root port declaring node 1 below it) and segment 0001 on node 1."""
    with mounted(str(TWO_SOCKET), make_mountpoint(tmp_path_factory.mktemp("two"))) as m:
        yield m


def cat(mnt, *paths: str) -> list[str]:
    return [(mnt.path / p).read_text() for p in paths]


def mode_size(mnt, path: str) -> tuple[str, int]:
    st = os.lstat(mnt.path / path)
    return oct(st.st_mode & 0o7777), st.st_size


# --- /sys/devices/system/cpu -----------------------------------------------------------------
def test_cpu_root_files(two):
    assert cat(two, *(f"{CPU}/{n}" for n in ("online", "possible", "present", "offline", "isolated", "kernel_max"))) \
        == ["0-15\n", "0-15\n", "0-15\n", "\n", "\n", "8191\n"]
    assert {mode_size(two, f"{CPU}/{n}") for n in ("online", "possible", "present", "offline", "kernel_max")} \
        == {("0o444", 4096)}
    assert sorted(p for p in os.listdir(two.path / CPU) if p.startswith("cpu")) == sorted(f"cpu{i}" for i in range(16))


@pytest.mark.parametrize("cpu, want", [
    # thread 1 of core 1 of package 0: its core is CPUs 1 and 9, its package 0-3,8-11
    (9, {"physical_package_id": "0", "die_id": "0", "core_id": "1", "cluster_id": "1",
         "core_cpus": "0202", "core_cpus_list": "1,9", "thread_siblings": "0202", "thread_siblings_list": "1,9",
         "core_siblings": "0f0f", "core_siblings_list": "0-3,8-11", "die_cpus_list": "0-3,8-11",
         "package_cpus": "0f0f", "package_cpus_list": "0-3,8-11", "cluster_cpus_list": "1,9"}),
    (4, {"physical_package_id": "1", "core_id": "0", "cluster_id": "4", "core_cpus_list": "4,12",
         "package_cpus": "f0f0", "package_cpus_list": "4-7,12-15"}),
])
def test_cpu_topology_files(two, cpu, want):
    base = f"{CPU}/cpu{cpu}/topology"
    got = {name: (two.path / base / name).read_text() for name in want}
    assert got == {k: v + "\n" for k, v in want.items()}
    for name in os.listdir(two.path / base):
        mode, size = mode_size(two, f"{base}/{name}")
        assert mode == "0o444"
        # the masks are binary attributes sized CPUMAP/CPULIST_FILE_MAX_BYTES
        assert size == (LIST_SIZE if name.endswith("_list") else 4096), name


def test_cpu_cache_files(two):
    base = f"{CPU}/cpu9/cache"
    assert sorted(os.listdir(two.path / base)) == ["index0", "index1", "index2", "index3", "uevent"]
    idx = lambda k, *names: cat(two, *(f"{base}/index{k}/{n}" for n in names))  # noqa: E731
    assert idx(0, "level", "type", "size", "ways_of_associativity", "number_of_sets", "coherency_line_size",
               "shared_cpu_list", "shared_cpu_map", "id") == ["1\n", "Data\n", "32K\n", "8\n", "64\n", "64\n",
                                                             "1,9\n", "0202\n", "1\n"]
    assert idx(1, "type") == ["Instruction\n"]
    assert idx(3, "level", "type", "size", "shared_cpu_list", "shared_cpu_map", "id") == \
        ["3\n", "Unified\n", "11264K\n", "0-3,8-11\n", "0f0f\n", "0\n"]
    assert cat(two, f"{CPU}/cpu12/cache/index3/id") == ["1\n"]          # package 1's L3
    assert mode_size(two, f"{base}/index3/shared_cpu_map") == ("0o444", 4096)
    assert mode_size(two, f"{base}/index3/uevent") == ("0o644", 4096)


def test_cpu_links_and_online(two):
    assert os.readlink(two.path / CPU / "cpu12/node1") == "../../node/node1"
    assert os.readlink(two.path / CPU / "cpu12/subsystem") == "../../../../bus/cpu"
    assert os.readlink(two.path / "sys/bus/cpu/devices/cpu12") == "../../../devices/system/cpu/cpu12"
    assert (two.path / "sys/bus/cpu/devices/cpu12/topology/core_id").read_text() == "0\n"
    assert not (two.path / CPU / "cpu0/online").exists()       # x86: cpu0 is not hotpluggable
    assert mode_size(two, f"{CPU}/cpu1/online") == ("0o644", 4096)
    r = sh(f"echo 1 > {CPU}/cpu1/online", cwd=two.path)
    assert r.returncode == 0, r.stderr
    for value, words in (("0", "Device or resource busy"), ("x", "Invalid argument")):
        r = sh(f"echo {value} > {CPU}/cpu1/online", cwd=two.path)
        assert r.returncode != 0 and words in r.stderr, (value, r.stderr)
    assert cat(two, f"{CPU}/cpu1/online", f"{CPU}/online") == ["1\n", "0-15\n"]


# --- /sys/devices/system/node -----------------------------------------------------------------
def test_node_files(two):
    assert cat(two, *(f"{NODE}/{n}" for n in ("online", "possible", "has_cpu", "has_memory", "has_normal_memory",
                                              "has_generic_initiator"))) == ["0-1\n"] * 5 + ["\n"]
    assert cat(two, f"{NODE}/node1/cpulist", f"{NODE}/node1/cpumap", f"{NODE}/node1/distance") == \
        ["4-7,12-15\n", "f0f0\n", "21 10\n"]
    assert mode_size(two, f"{NODE}/node1/cpulist") == ("0o444", LIST_SIZE)
    assert mode_size(two, f"{NODE}/node1/cpumap") == ("0o444", 4096)
    assert mode_size(two, f"{NODE}/node1/compact") == ("0o200", 4096)
    meminfo = cat(two, f"{NODE}/node1/meminfo")[0].splitlines()
    assert meminfo[:3] == ["Node 1 MemTotal:       16777216 kB", "Node 1 MemFree:        16777216 kB",
                           "Node 1 MemUsed:               0 kB"]
    assert "Node 1 SecPageTables:         0 kB" in meminfo                 # 6.12
    assert meminfo[-3:] == ["Node 1 HugePages_Total:     0", "Node 1 HugePages_Free:      0",
                            "Node 1 HugePages_Surp:      0"]
    assert all(re.fullmatch(r"Node 1 [A-Za-z_()]+: +\d+( kB)?", line) for line in meminfo)
    assert cat(two, f"{NODE}/node0/numastat")[0].split()[::2] == \
        ["numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node"]
    assert sorted(p for p in os.listdir(two.path / NODE / "node1") if p.startswith("cpu")) == \
        ["cpu12", "cpu13", "cpu14", "cpu15", "cpu4", "cpu5", "cpu6", "cpu7", "cpulist", "cpumap"]
    assert os.readlink(two.path / NODE / "node1/cpu4") == "../../cpu/cpu4"
    assert os.readlink(two.path / "sys/bus/node/devices/node1") == "../../../devices/system/node/node1"


# --- PCI devices and buses ---------------------------------------------------------------------
@pytest.mark.parametrize("bdf, node, mask, cpus", [
    ("0000:01:00.0", "0", "0f0f", "0-3,8-11"),      # root bus 0000:00 is node 0's
    ("0000:02:00.0", "1", "f0f0", "4-7,12-15"),     # below the root port that declares node 1
    ("0001:01:00.0", "1", "f0f0", "4-7,12-15"),     # segment 0001's root bus is node 1's
])
def test_devices_follow_their_node(two, bdf, node, mask, cpus):
    d = f"sys/bus/pci/devices/{bdf}"
    assert cat(two, f"{d}/numa_node", f"{d}/local_cpus", f"{d}/local_cpulist") == [node + "\n", mask + "\n",
                                                                                  cpus + "\n"]
    bus = "sys/class/pci_bus/" + bdf[:7]
    assert cat(two, f"{bus}/cpuaffinity", f"{bus}/cpulistaffinity") == [mask + "\n", cpus + "\n"]


def test_numa_node_write_takes_online_nodes_only(mount_preset):
    m = mount_preset(str(TWO_SOCKET))
    d = "sys/bus/pci/devices/0000:01:00.0"
    for bad in ("2", "-2", "1024", "x"):
        r = sh(f"echo {bad} > {d}/numa_node", cwd=m.path)
        assert r.returncode != 0 and "Invalid argument" in r.stderr, bad
        assert cat(m, f"{d}/numa_node", f"{d}/local_cpulist") == ["0\n", "0-3,8-11\n"]
    r = sh(f"echo 1 > {d}/numa_node", cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert cat(m, f"{d}/numa_node", f"{d}/local_cpus", "sys/class/pci_bus/0000:01/cpulistaffinity") == \
        ["1\n", "f0f0\n", "0-3,8-11\n"]                  # the bus keeps its node
    r = sh(f"echo -1 > {d}/numa_node", cwd=m.path)
    assert r.returncode == 0 and cat(m, f"{d}/local_cpus") == ["ffff\n"]
    log = (m.path / "sys/kernel/debug/vfakefs/dmesg").read_text()
    assert "igb 0000:01:00.0: [Firmware Bug]: Overriding NUMA node to 1.  Contact your vendor for updates." in log


def test_seed_devices_spread_over_its_two_nodes(seed_mnt):
    for bdf, node in (("0000:01:00.0", 0), ("0000:02:00.0", 0), ("0000:03:00.0", 1), ("0000:03:00.1", 1),
                      ("0000:06:00.0", 0), ("0000:0c:00.0", 1), ("0000:00:1f.4", 0)):
        d = f"sys/bus/pci/devices/{bdf}"
        assert cat(seed_mnt, f"{d}/numa_node", f"{d}/local_cpus", f"{d}/local_cpulist") == \
            [f"{node}\n", f"{1 << node}\n", f"{node}\n"], bdf
    assert "\tNUMA node: 1\n" in seed_mnt.lspci("-vv", "-s", "03:00.0").stdout
    assert ", NUMA node 1, " in seed_mnt.lspci("-v", "-s", "03:00.0").stdout


def test_vfs_take_their_pfs_node(mount_preset):
    m = mount_preset("seed-vtd")
    pf = "sys/bus/pci/devices/0000:03:00.0"
    r = sh(f"echo 2 > {pf}/sriov_numvfs", cwd=m.path)
    assert r.returncode == 0, r.stderr
    vf = os.path.realpath(m.path / pf / "virtfn1")
    assert cat(m, f"{vf}/numa_node", f"{vf}/local_cpulist") == ["1\n", "1\n"]


def test_qemu_ref_has_no_numa_as_the_reference(qemu_mnt):
    for bdf in preset_devices("qemu-ref"):
        d = f"sys/bus/pci/devices/{bdf}"
        # the capture: numa_node -1, local_cpus 3, local_cpulist 0-1
        assert cat(qemu_mnt, f"{d}/numa_node", f"{d}/local_cpus", f"{d}/local_cpulist") == ["-1\n", "3\n", "0-1\n"]
    assert cat(qemu_mnt, f"{NODE}/possible", f"{NODE}/node0/cpulist", f"{CPU}/online") == ["0\n", "0-1\n", "0-1\n"]
    assert not (qemu_mnt.path / CPU / "cpu0/cache").exists()
    info = (qemu_mnt.path / "proc/cpuinfo").read_text()
    assert info.count("processor\t: ") == 2 and info.endswith("power management:\n\n")
    assert "model name\t: QEMU TCG CPU version 2.5+\n" in info
    assert "bogomips\t: 4890.82\n" in info        # the boot log's "4890.82 BogoMIPS (lpj=9781640)"
    assert mode_size(qemu_mnt, "proc/cpuinfo") == ("0o444", 0)


# --- clients -------------------------------------------------------------------------------------
def test_lscpu_reads_the_simulated_cpus(two):
    r = run(["lscpu", "--sysroot", two.path, "-e=CPU,NODE,SOCKET,CORE,CACHE,ONLINE"])
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert len(rows) == 16
    for cpu, node, socket, core, caches, online in rows:
        c = int(cpu)
        package, core_no = (c % 8) // 4, c % 4 + 4 * ((c % 8) // 4)
        assert (int(node), int(socket), int(core), online) == (package, package, core_no, "yes"), rows
        assert caches == f"{core_no}:{core_no}:{core_no}:{package}"
    r = run(["lscpu", "--sysroot", two.path])
    assert r.returncode == 0, r.stderr
    for line in ("Socket(s): 2", "Core(s) per socket: 4", "Thread(s) per core: 2", "NUMA node(s): 2",
                 "NUMA node0 CPU(s): 0-3,8-11", "NUMA node1 CPU(s): 4-7,12-15", "Vendor ID: GenuineIntel",
                 "Model name: Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz"):
        assert line in re.sub(r"[ \t]+", " ", r.stdout), line


def lstopo_xml(cmd_prefix: list, cwd=None) -> ET.Element:
    r = run([*cmd_prefix, client("lstopo-no-graphics"), "--whole-io", "--of", "xml", "-"], cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "failed to find sysfs cpu topology directory" not in r.stderr, r.stderr
    return ET.fromstring(r.stdout)


def placement(root: ET.Element) -> dict[str, set[int]]:
    """Each PCI object's busid (and each OS device's name) -> the NUMA nodes of the normal
    object its I/O tree hangs from."""
    out: dict[str, set[int]] = {}

    def walk(el, nodes):
        if "nodeset" in el.attrib:
            mask = int(el.attrib["nodeset"].replace(",", ""), 16)
            nodes = {i for i in range(mask.bit_length()) if mask >> i & 1}
        if "pci_busid" in el.attrib:
            out[el.attrib["pci_busid"]] = nodes
        if el.attrib.get("type") == "OSDev":
            out[el.attrib["name"]] = nodes
        for child in el.findall("object"):
            walk(child, nodes)
    walk(root.find("object"), set())
    return out


def test_lstopo_with_fsroot_shows_every_seed_device_and_nic(seed_mnt):
    root = lstopo_xml(["env", f"HWLOC_FSROOT={seed_mnt.path}"])
    where = placement(root)
    for bdf in preset_devices("seed-vtd"):
        assert bdf in where, bdf          # every function, bridges included
    for nic in ("eth0", "eth1", "eth2"):
        assert nic in where, nic
    nodes = root.findall(".//object[@type='NUMANode']")
    assert sorted((n.attrib["os_index"], n.attrib["local_memory"]) for n in nodes) == \
        [("0", str(8 << 30)), ("1", str(8 << 30))]
    assert len(root.findall(".//object[@type='Package']")) == 2
    assert len(root.findall(".//object[@type='L3Cache']")) == 2


def test_lstopo_with_fsroot_places_each_host_bridge_under_its_node(two):
    where = placement(lstopo_xml(["env", f"HWLOC_FSROOT={two.path}"]))
    assert where["0000:00:1c.0"] == where["0000:01:00.0"] == where["eth0"] == {0}
    assert where["0001:00:02.0"] == where["0001:01:00.0"] == where["eth2"] == {1}
    # hwloc places a whole host bridge by its first device's local_cpus: the root port that
    # declares node 1 on segment 0000 is drawn with its segment, though its files say node 1
    assert where["0000:02:00.0"] == where["eth1"] == {0}
    assert (two.path / "sys/bus/pci/devices/0000:02:00.0/numa_node").read_text() == "1\n"


def test_lstopo_inside_vfakefs_run(two):
    """Without HWLOC_FSROOT, inside `vfakefs run`: /sys and /proc/cpuinfo are the simulated
    machine's, so lstopo finds the same 16 CPUs and nodes on this 2-CPU host."""
    root = lstopo_xml([sys.executable, "-m", "vfakefs", "run", "--mnt", str(two.path), "--"], cwd=REPO)
    assert len(root.findall(".//object[@type='PU']")) == 16
    assert len(root.findall(".//object[@type='NUMANode']")) == 2
    where = placement(root)
    assert where["0001:01:00.0"] == where["eth2"] == {1} and where["eth0"] == {0}


def test_proc_cpuinfo_is_bound_inside_vfakefs_run_only(two):
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(two.path), "--", "cat", "/proc/cpuinfo"], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (two.path / "proc/cpuinfo").read_text()
    assert r.stdout.count("processor\t: ") == 16 and "physical id\t: 1\n" in r.stdout
    with open("/proc/cpuinfo") as f:
        assert "Silver 4110" not in f.read()       # the host's own is untouched


def test_lstopo_reads_the_cpu_identity_from_proc_cpuinfo(two):
    """hwloc's linux backend takes each package's CPUModel from MNT/proc/cpuinfo; its x86
    backend would overwrite it with what the host's CPUID instruction says (no file can
    answer that), so it is left out here."""
    root = lstopo_xml(["env", f"HWLOC_FSROOT={two.path}", "HWLOC_COMPONENTS=-x86"])
    for package in root.findall(".//object[@type='Package']"):
        info = {i.attrib["name"]: i.attrib["value"] for i in package.findall("info")}
        assert info["CPUModel"] == "Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz", info


def test_cpu_counts_inside_vfakefs_run(two):
    """glibc counts CPUs from /sys/devices/system/cpu (online, the cpuN directories), so
    inside `vfakefs run` the simulated 16; the affinity mask (nproc) stays the host's."""
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(two.path), "--", "sh", "-c",
             "nproc --all; getconf _NPROCESSORS_ONLN; getconf _NPROCESSORS_CONF; nproc; lscpu -p=CPU,NODE | tail -1"],
            cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["16", "16", "16", str(len(os.sched_getaffinity(0))), "15,1"]
