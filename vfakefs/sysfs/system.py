"""/sys/devices/system/cpu and /sys/devices/system/node, and their buses (/sys/bus/cpu,
/sys/bus/node), drawn from the Machine's locality (model/locality.py).

- cpu/ (drivers/base/cpu.c): online, possible, present, offline, kernel_max, isolated;
  cpuN/ with topology/ (drivers/base/topology.c), cache/indexK/ (drivers/base/cacheinfo.c),
  the nodeM link (register_cpu_under_node) and `online` on every CPU but cpu0, which x86
  never makes hotpluggable (arch_register_cpu()).
- node/ (drivers/base/node.c): the node_states masks and nodeN/ with cpumap, cpulist,
  distance, meminfo, numastat and its cpuN links.
Masks print as "%*pb", lists as "%*pbl" (cpumask.py). The topology/ masks and the
nodes' cpumap/cpulist are binary attributes in the kernel, sized CPUMAP_FILE_MAX_BYTES
and CPULIST_FILE_MAX_BYTES in stat; the rest are ordinary 4096-byte attributes.

Not here: CPU hotplug (writing 0 to cpuN/online answers EBUSY; every CPU stays online),
cpufreq, cpuidle, smt/, vulnerabilities/, modalias, memory blocks (nodeN/memoryM),
hugepages/, vmstat. A node's memory is all free: no page allocator is simulated.
"""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.cpumask import CPULIST_FILE_MAX_BYTES, CPUMAP_FILE_MAX_BYTES, NR_CPUS, cpulist, cpumap
from vfakefs.sysfs.nodes import Attr, Dir, Link
from vfakefs.sysfs.parse import kstrtobool

_EMPTY_UEVENT = Attr("uevent", lambda o: "", lambda o, t: None, 0o644)


def _mask_pair(name: str, cpus_of):
    """A topology/ mask and its _list twin: (loc, cpu) -> the CPUs."""
    return (Attr(name, lambda o: cpumap(cpus_of(*o), o[0].nr_cpus), size=CPUMAP_FILE_MAX_BYTES),
            Attr(f"{name}_list", lambda o: cpulist(cpus_of(*o)), size=CPULIST_FILE_MAX_BYTES))


# --- cpuN/topology/ ----------------------------------------------------------------------
TOPOLOGY = (
    Attr("physical_package_id", lambda o: "%d\n" % o[0].cpus[o[1]].package),
    Attr("die_id", lambda o: "0\n"),                                    # one die per package
    Attr("cluster_id", lambda o: "%d\n" % o[0].cluster_id(o[1])),
    Attr("core_id", lambda o: "%d\n" % o[0].cpus[o[1]].core),
    *_mask_pair("core_cpus", lambda loc, c: loc.core_cpus(c)),
    *_mask_pair("thread_siblings", lambda loc, c: loc.core_cpus(c)),
    *_mask_pair("core_siblings", lambda loc, c: loc.package_cpus(c)),
    *_mask_pair("cluster_cpus", lambda loc, c: loc.cluster_cpus(c)),
    *_mask_pair("die_cpus", lambda loc, c: loc.package_cpus(c)),
    *_mask_pair("package_cpus", lambda loc, c: loc.package_cpus(c)),
)

# --- cpuN/cache/indexK/: obj (loc, cpu, cache) -------------------------------------------
CACHE_INDEX = (
    Attr("id", lambda o: "%d\n" % o[0].cache_id(o[1], o[2])),
    Attr("level", lambda o: "%d\n" % o[2].level),
    Attr("type", lambda o: o[2].type + "\n"),
    Attr("size", lambda o: "%dK\n" % (o[2].size >> 10)),
    Attr("coherency_line_size", lambda o: "%d\n" % o[2].line),
    Attr("ways_of_associativity", lambda o: "%d\n" % o[2].ways),
    Attr("number_of_sets", lambda o: "%d\n" % o[2].sets),
    Attr("physical_line_partition", lambda o: "1\n"),
    Attr("shared_cpu_map", lambda o: cpumap(o[0].cache_cpus(o[1], o[2]), o[0].nr_cpus)),
    Attr("shared_cpu_list", lambda o: cpulist(o[0].cache_cpus(o[1], o[2]))),
    _EMPTY_UEVENT,
)


def cpu_online_store(obj, text: str) -> None:
    """online_store(): kstrtobool (EINVAL); onlining an online CPU succeeds and does nothing;
    offlining answers what cpu_down() says while CPU hotplug is disabled (EBUSY): CPU
    hotplug is not simulated."""
    if not kstrtobool(text):
        raise SysfsError(errno.EBUSY)


cpu_online = Attr("online", lambda o: "1\n", cpu_online_store, 0o644)


def cpu_dir(v, cpu: int) -> dict:
    loc = v.m.locality
    out = {"topology": Dir({a.name: a.bind((loc, cpu)) for a in TOPOLOGY}),
           "subsystem": Link("../../../../bus/cpu"), "power": Dir({}), "uevent": _EMPTY_UEVENT.bind(None),
           f"node{loc.cpus[cpu].node}": Link(f"../../node/node{loc.cpus[cpu].node}")}
    if cpu != 0:
        out["online"] = cpu_online.bind(cpu)
    if loc.caches:
        out["cache"] = Dir({"uevent": _EMPTY_UEVENT.bind(None),
                            **{f"index{k}": Dir({a.name: a.bind((loc, cpu, c)) for a in CACHE_INDEX})
                               for k, c in enumerate(loc.caches)}})
    return out


CPU_ROOT = (
    Attr("online", lambda loc: cpulist(loc.all_cpus())),
    Attr("possible", lambda loc: cpulist(loc.all_cpus())),
    Attr("present", lambda loc: cpulist(loc.all_cpus())),
    Attr("offline", lambda loc: "\n"),
    Attr("isolated", lambda loc: "\n"),
    Attr("kernel_max", lambda loc: "%d\n" % (NR_CPUS - 1)),
)


def cpu_root_entries(v) -> dict:
    loc = v.m.locality
    out: dict = {a.name: a.bind(loc) for a in CPU_ROOT}
    out["power"] = Dir({})
    out["uevent"] = _EMPTY_UEVENT.bind(None)
    for c in range(loc.nr_cpus):
        out[f"cpu{c}"] = Dir(lambda c=c: cpu_dir(v, c))
    return out


# --- node/ ---------------------------------------------------------------------------------
# node_read_meminfo(): "Node %d <label>%8lu kB", then hugetlb_report_node_meminfo()'s three
# lines "%5u"; SecPageTables since 6.3 (the profile says)
MEMINFO = ("MemTotal:       ", "MemFree:        ", "MemUsed:        ", "SwapCached:     ", "Active:         ",
           "Inactive:       ", "Active(anon):   ", "Inactive(anon): ", "Active(file):   ", "Inactive(file): ",
           "Unevictable:    ", "Mlocked:        ", "Dirty:          ", "Writeback:      ", "FilePages:      ",
           "Mapped:         ", "AnonPages:      ", "Shmem:          ", "KernelStack:    ", "PageTables:     ",
           "SecPageTables:  ", "NFS_Unstable:   ", "Bounce:         ", "WritebackTmp:   ", "KReclaimable:   ",
           "Slab:           ", "SReclaimable:   ", "SUnreclaim:     ", "AnonHugePages:  ", "ShmemHugePages: ",
           "ShmemPmdMapped: ", "FileHugePages:  ", "FilePmdMapped:  ")
HUGETLB = ("HugePages_Total: ", "HugePages_Free:  ", "HugePages_Surp:  ")
NUMASTAT = ("numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node")


def meminfo_show(o) -> str:
    m, node = o
    kb = node.memory >> 10
    value = {"MemTotal:       ": kb, "MemFree:        ": kb}
    out = []
    for label in MEMINFO:
        if label.startswith("SecPageTables") and not m.profile.node_sec_page_tables:
            continue
        out.append("Node %d %s%8d kB\n" % (node.id, label, value.get(label, 0)))
    out += ["Node %d %s%5d\n" % (node.id, label, 0) for label in HUGETLB]
    return "".join(out)


NODE = (
    Attr("cpumap", lambda o: cpumap(o[1].cpus, o[0].locality.nr_cpus), size=CPUMAP_FILE_MAX_BYTES),
    Attr("cpulist", lambda o: cpulist(o[1].cpus), size=CPULIST_FILE_MAX_BYTES),
    Attr("distance", lambda o: " ".join("%d" % d for d in o[1].distance) + "\n"),
    Attr("meminfo", meminfo_show),
    Attr("numastat", lambda o: "".join(f"{k} 0\n" for k in NUMASTAT)),
    Attr("compact", None, lambda o, t: None, 0o200),      # compaction has nothing to move here
)


def node_dir(v, node) -> dict:
    out: dict = {a.name: a.bind((v.m, node)) for a in NODE}
    out.update({"subsystem": Link("../../../../bus/node"), "power": Dir({}), "uevent": _EMPTY_UEVENT.bind(None)})
    for c in node.cpus:
        out[f"cpu{c}"] = Link(f"../../cpu/cpu{c}")
    return out


def _node_states(loc) -> dict:
    """node_states[]: possible and online are every node; has_cpu, has_memory and
    has_normal_memory those with CPUs or memory (x86-64: all memory is normal)."""
    every = [n.id for n in loc.nodes]
    return {"possible": every, "online": every, "has_normal_memory": [n.id for n in loc.nodes if n.memory],
            "has_memory": [n.id for n in loc.nodes if n.memory], "has_cpu": [n.id for n in loc.nodes if n.cpus],
            "has_generic_initiator": []}


def node_root_entries(v) -> dict:
    loc = v.m.locality
    out: dict = {name: Attr(name, lambda o, ids=ids: cpulist(ids)).bind(None)
                 for name, ids in _node_states(loc).items()}
    out["power"] = Dir({})
    out["uevent"] = _EMPTY_UEVENT.bind(None)
    for n in loc.nodes:
        out[f"node{n.id}"] = Dir(lambda n=n: node_dir(v, n))
    return out


def system_entries(v) -> dict:
    return {"cpu": Dir(lambda: cpu_root_entries(v)), "node": Dir(lambda: node_root_entries(v))}


# --- /sys/bus/cpu and /sys/bus/node ----------------------------------------------------------
def bus_cpu_entries(v) -> dict:
    return {"devices": Dir(lambda: {f"cpu{c}": Link(f"../../../devices/system/cpu/cpu{c}")
                                    for c in range(v.m.locality.nr_cpus)}), "drivers": Dir({})}


def bus_node_entries(v) -> dict:
    return {"devices": Dir(lambda: {f"node{n.id}": Link(f"../../../devices/system/node/node{n.id}")
                                    for n in v.m.locality.nodes}), "drivers": Dir({})}
