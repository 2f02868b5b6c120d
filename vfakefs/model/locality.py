"""Where things sit: sockets, cores, threads, caches and NUMA nodes, and which node each
PCI device belongs to (drivers/base/{cpu,topology,node,cacheinfo}.c show what this holds).

A topology declares them (`[cpu]`, `[[numa_node]]`, a device's `numa_node`); a machine
that declares nothing has what the kernel makes of a board without SRAT ("No NUMA
configuration found", "Faking a node"): one node 0 holding every CPU and all memory,
and every device's node NUMA_NO_NODE (-1).

CPU numbering follows the MADT order x86 firmware lists (and the kernel numbers
logical CPUs in): the first thread of every core, package by package, then the second
threads, so a two-socket, four-core, two-thread machine has package 0 = CPUs 0-3,8-11.
APIC ids are package | core | thread bit fields, each field a power of two wide.

A device's node: on x86 pci_device_add() gives every function its bus's node
(pcibus_to_node(): the host bridge's _PXM, shared down the whole tree); `buses` in a
`[[numa_node]]` declares the root buses. Our trees have one root bus per domain, so a
board whose sockets each have their own host bridge is declared with `numa_node` on the
root port that stands for it: the port, its subtree and the buses below follow it.
"""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ALERT

NUMA_NO_NODE = -1
LOCAL_DISTANCE, REMOTE_DISTANCE = 10, 20      # include/linux/numa.h / numa_set_distance() defaults
CACHE_TYPES = ("Data", "Instruction", "Unified")
CACHE_SHARED = ("thread", "core", "package")
BAD_APICID = 0xFFFF
_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def parse_cpulist(text: str) -> list[int]:
    """bitmap_parselist() for what a topology writes: "0-3,8-11", "5", "" (none); ValueError else."""
    text = text.strip()
    if not text:
        return []
    if not _LIST.fullmatch(text):
        raise ValueError(f"{text!r} is not a CPU list (e.g. \"0-3,8-11\")")
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"{part!r}: range end below its start")
        out.extend(range(a, b + 1))
    return out


def _bits(n: int) -> int:
    """get_count_order(): the width of an APIC id field holding n values."""
    return max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class Cpu:
    id: int
    package: int
    core: int           # core_id: the core's number within its package
    thread: int
    node: int
    apicid: int


@dataclass(frozen=True)
class Cache:
    level: int
    type: str           # Data, Instruction, Unified (cacheinfo.c cache_type_string)
    size: int           # bytes
    ways: int
    line: int = 64
    shared: str = "core"    # which CPUs share one: a thread's own, a core's, a package's

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)


@dataclass(frozen=True)
class Node:
    id: int
    cpus: tuple[int, ...]
    memory: int         # bytes
    distance: tuple[int, ...]


@dataclass(frozen=True)
class CpuModel:
    """What /proc/cpuinfo names (arch/x86/kernel/cpu/proc.c)."""
    vendor: str = "GenuineIntel"
    family: int = 6
    model: int = 85
    stepping: int = 4
    model_name: str = "Intel(R) Xeon(R) CPU"
    mhz: float = 2000.0
    microcode: int = 0x1
    cpuid_level: int = 22
    address_sizes: tuple[int, int] = (46, 48)
    flags: tuple[str, ...] = ("fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr",
                              "pge", "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "ht",
                              "syscall", "nx", "lm", "constant_tsc", "nopl", "xtopology", "cpuid", "pni", "ssse3",
                              "cx16", "sse4_1", "sse4_2", "x2apic", "popcnt", "lahf_lm")
    bugs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Locality:
    sockets: int
    cores: int                      # per socket
    threads: int                    # per core
    cpus: tuple[Cpu, ...]
    nodes: tuple[Node, ...]
    numa: bool                      # declared ([[numa_node]]); False: one faked node, devices -1
    caches: tuple[Cache, ...] = ()
    model: CpuModel = field(default_factory=CpuModel)
    root_nodes: dict = field(default_factory=dict)      # domain -> node of its root bus (_PXM)
    placed: dict = field(default_factory=dict)          # Bdf -> the node firmware gives the function
    #                                                     (a bridge's: the node of the buses below it)

    @classmethod
    def build(cls, sockets: int, cores: int, threads: int, nodes: list[dict] | None = None,
              caches: tuple = (), model: CpuModel | None = None, memory: int = 1 << 30) -> Locality:
        """nodes: [{"cpus": [...], "memory": bytes, "distance": [...]}, ...]; None: not
        declared (one node with every CPU and all `memory`)."""
        layout = []
        cbits, tbits = _bits(cores), _bits(threads)
        for t in range(threads):
            for p in range(sockets):
                for c in range(cores):
                    layout.append((p, c, t, p << (cbits + tbits) | c << tbits | t))
        numa = nodes is not None
        if not numa:
            nodes = [{"cpus": list(range(len(layout))), "memory": memory}]
        node_of = {c: i for i, n in enumerate(nodes) for c in n["cpus"]}
        cpus = tuple(Cpu(i, p, c, t, node_of.get(i, 0), a) for i, (p, c, t, a) in enumerate(layout))
        out = tuple(Node(i, tuple(sorted(n["cpus"])), n["memory"],
                         tuple(n.get("distance") or [LOCAL_DISTANCE if j == i else REMOTE_DISTANCE
                                                     for j in range(len(nodes))]))
                    for i, n in enumerate(nodes))
        return cls(sockets, cores, threads, cpus, out, numa, tuple(caches), model or CpuModel())

    @classmethod
    def single(cls, nr_cpus: int) -> Locality:
        """A machine that declares nothing: one socket of nr_cpus single-thread cores."""
        return cls.build(1, nr_cpus, 1)

    @property
    def nr_cpus(self) -> int:
        return len(self.cpus)

    def all_cpus(self) -> list[int]:
        return list(range(self.nr_cpus))

    # --- topology_*_cpumask() ---------------------------------------------------------
    def core_cpus(self, cpu: int) -> list[int]:
        """topology_sibling_cpumask(): the threads of cpu's core."""
        me = self.cpus[cpu]
        return [c.id for c in self.cpus if (c.package, c.core) == (me.package, me.core)]

    def package_cpus(self, cpu: int) -> list[int]:
        """topology_core_cpumask(): every CPU of cpu's package (one die per package here)."""
        return [c.id for c in self.cpus if c.package == self.cpus[cpu].package]

    def cache_cpus(self, cpu: int, cache: Cache) -> list[int]:
        """shared_cpu_map: the CPUs sharing cpu's instance of the cache."""
        if cache.shared == "thread":
            return [cpu]
        return self.core_cpus(cpu) if cache.shared == "core" else self.package_cpus(cpu)

    def cache_id(self, cpu: int, cache: Cache) -> int:
        """cacheinfo `id` on x86: the APIC id of the sharing CPUs with the bits that tell
        them apart shifted out (get_cache_id(): apicid >> index_msb)."""
        shift = {"thread": 0, "core": _bits(self.threads), "package": _bits(self.threads) + _bits(self.cores)}
        return self.cpus[cpu].apicid >> shift[cache.shared]

    def cluster_id(self, cpu: int) -> int:
        """topology_cluster_id() on x86: cpu_l2c_id, the L2's id where CPUID leaf 4 gives it
        (Intel); BAD_APICID where nothing set it."""
        l2 = [c for c in self.caches if c.level == 2]
        if not l2 or self.model.vendor != "GenuineIntel":
            return BAD_APICID
        return self.cache_id(cpu, l2[0])

    def cluster_cpus(self, cpu: int) -> list[int]:
        """topology_cluster_cpumask(): the CPUs sharing the L2 (cpu_l2c_shared_map), or the
        core's threads when none is known."""
        l2 = [c for c in self.caches if c.level == 2]
        return self.cache_cpus(cpu, l2[0]) if l2 and self.model.vendor == "GenuineIntel" else self.core_cpus(cpu)

    # --- nodes ------------------------------------------------------------------------
    def node_cpus(self, node: int) -> list[int]:
        """cpumask_of_node(); an unknown node (NUMA_NO_NODE): cpu_online_mask, as
        cpumask_of_pcibus() and pci_dev_show_local_cpu() fall back to."""
        if 0 <= node < len(self.nodes):
            return list(self.nodes[node].cpus)
        return self.all_cpus()

    def node_online(self, node: int) -> bool:
        return 0 <= node < len(self.nodes)

    def bus_node(self, bridge, domain: int) -> int:
        """pcibus_to_node() of the bus a bridge (None: the host bridge) opens."""
        if bridge is None:
            return self.root_nodes.get(domain, NUMA_NO_NODE)
        return self.placed.get(bridge.bdf, self.root_nodes.get(domain, NUMA_NO_NODE))

    def vf_node(self, pf) -> int:
        """A VF's node: pci_device_add() gives it its bus's, the node the PF was placed on
        (not a node written to the PF's numa_node since)."""
        return self.placed.get(pf.bdf, self.root_nodes.get(pf.bdf.domain, NUMA_NO_NODE))


def override_numa_node(machine, dev, node: int) -> None:
    """pci-sysfs.c numa_node_store(): -1 or an online node, else EINVAL; the kernel takes it
    with a firmware-bug alert (and TAINT_FIRMWARE_WORKAROUND)."""
    if node != NUMA_NO_NODE and not machine.locality.node_online(node):
        raise SysfsError(errno.EINVAL)
    machine.kmsg.dev(dev, f"[Firmware Bug]: Overriding NUMA node to {node}.  Contact your vendor for updates.",
                     KERN_ALERT)
    dev.numa_node = node
