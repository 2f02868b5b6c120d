"""The locality a topology declares, checked: `cpus`, `[cpu]` (sockets, cores per socket,
threads per core, caches, the /proc/cpuinfo identity) and `[[numa_node]]` (each node's
CPUs, memory, root buses and SLIT distances), plus each device's `numa_node`. Every
mistake is a TopologyError naming the field; the answer is a locality.Locality, and each
device spec's `numa_node` resolved (declared, else its parent's, else its root bus's)."""
from __future__ import annotations

from vfakefs.model.locality import (CACHE_SHARED, CACHE_TYPES, LOCAL_DISTANCE, NUMA_NO_NODE, Cache, CpuModel,
                                    Locality, parse_cpulist)
from vfakefs.model.topology_fields import TEXT, _among, _is, _list, _u, check_fields, parse_size

MAX_CPUS = 512
_NUMBER = lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else \
    f"{v!r} is not a positive number"   # noqa: E731
CPU_TYPES = {"sockets": _u(1, 64), "cores": _u(1, 256), "threads": _u(1, 8), "vendor": TEXT, "model_name": TEXT,
             "family": _u(0, 0x10E), "model": _u(0, 0xFF), "stepping": _u(0, 0xF), "mhz": _NUMBER,
             "microcode": _u(0, 0xFFFFFFFF), "cpuid_level": _u(0, 0xFFFFFFFF), "flags": _list(TEXT),
             "bugs": _list(TEXT), "address_sizes": _list(_u(32, 64)), "caches": _list(_is(dict, "a table"))}
CACHE_FIELDS = {"level": _u(1, 4), "type": _among(set(CACHE_TYPES)), "size": lambda v: None, "ways": _u(1, 256),
                "line": _u(16, 256), "shared": _among(set(CACHE_SHARED))}
NODE_TYPES = {"cpus": TEXT, "memory": lambda v: None, "buses": _list(TEXT), "distance": _list(_u(0, 255))}


def _bytes(err, where: str, value, unit: int) -> int:
    """A number of bytes or "512K", "16G": a multiple of unit."""
    n = parse_size(value)
    if n is None:
        raise err(where, f"{value!r} is not a size (e.g. 32768, \"32K\", \"16G\")")
    if n < 0 or n % unit:
        raise err(where, f"{n} is not a multiple of {unit} bytes")
    return n


def _caches(err, specs: list) -> tuple[Cache, ...]:
    out = []
    for i, c in enumerate(specs):
        where = f"cpu.caches[{i}]"
        check_fields(err, where, c, CACHE_FIELDS)
        for key in ("level", "size", "ways"):
            if key not in c:
                raise err(where, f"missing required key {key!r}")
        line = c.get("line", 64)
        size = _bytes(err, f"{where}.size", c["size"], c["ways"] * line)
        if size == 0:
            raise err(f"{where}.size", "a cache has a size")
        kind = c.get("type", "Unified")
        shared = c.get("shared", "core" if c["level"] < 3 else "package")
        if any((o.level, o.type) == (c["level"], kind) for o in out):
            raise err(where, f"a second level {c['level']} {kind} cache")
        out.append(Cache(c["level"], kind, size, c["ways"], line, shared))
    return tuple(sorted(out, key=lambda c: (c.level, CACHE_TYPES.index(c.type))))


def check_locality(err, d: dict, specs: list[dict], order: list[dict]) -> Locality:
    cpu = d.get("cpu", {})
    check_fields(err, "cpu", cpu, CPU_TYPES)
    if cpu:
        sockets, cores, threads = cpu.get("sockets", 1), cpu.get("cores", 1), cpu.get("threads", 1)
        n = sockets * cores * threads
        if n > MAX_CPUS:
            raise err("cpu", f"{sockets} x {cores} x {threads} = {n} CPUs, more than {MAX_CPUS}")
        if "cpus" in d and d["cpus"] != n:
            raise err("cpus", f"{d['cpus']} is not sockets x cores x threads = {sockets} x {cores} x {threads} = {n}")
        d["cpus"] = n                  # what the rest of the machine counts (/proc/interrupts columns, queues)
    else:
        sockets, cores, threads = 1, int(d.get("cpus", 2)), 1
    n = sockets * cores * threads
    sizes = cpu.get("address_sizes", [46, 48])
    if len(sizes) != 2:
        raise err("cpu.address_sizes", "expected [physical bits, virtual bits]")
    base = CpuModel()
    model = CpuModel(cpu.get("vendor", base.vendor), cpu.get("family", base.family), cpu.get("model", base.model),
                     cpu.get("stepping", base.stepping), cpu.get("model_name", base.model_name),
                     float(cpu.get("mhz", base.mhz)), cpu.get("microcode", base.microcode),
                     cpu.get("cpuid_level", base.cpuid_level), tuple(sizes),
                     tuple(cpu.get("flags", base.flags)), tuple(cpu.get("bugs", base.bugs)))
    caches = _caches(err, cpu.get("caches", []))
    decl = d.get("numa_node")
    nodes = None if decl is None else _nodes(err, decl, sockets, cores, threads, specs)
    if nodes is not None and "memory" in d:
        raise err("memory", "with [[numa_node]] each node declares its own memory")
    memory = _bytes(err, "memory", d.get("memory", "1G"), 4096)
    loc = Locality.build(sockets, cores, threads, nodes, caches, model, memory)
    roots = {}
    for i, nd in enumerate(decl or []):
        for bus in nd.get("buses", []):
            roots[int(bus.split(":")[0], 16)] = i
    loc.root_nodes.update(roots)
    count = len(loc.nodes)
    for s in order:
        node = s.get("numa_node")
        if node is not None and node >= count:
            raise err(f"{s['where']}.numa_node", f"node {node} is not declared (nodes: 0..{count - 1}; [[numa_node]])")
        if node is None:
            parent = s.get("parent")
            node = loc.placed[parent] if parent is not None else roots.get(s["bdf"].domain, NUMA_NO_NODE)
        s["numa_node"] = loc.placed[s["bdf"]] = node
    return loc


def _nodes(err, decl, sockets: int, cores: int, threads: int, specs: list[dict]) -> list[dict]:
    if not isinstance(decl, list) or not decl:
        raise err("numa_node", "expected [[numa_node]] tables, one per node")
    n = sockets * cores * threads
    package = [[] for _ in range(sockets)]
    for i, (t, p, c) in enumerate((t, p, c) for t in range(threads) for p in range(sockets) for c in range(cores)):
        package[p].append(i)
    domains = {"%04x:00" % s["bdf"].domain for s in specs}
    owner: dict[int, int] = {}
    bus_owner: dict[str, int] = {}
    out = []
    for i, nd in enumerate(decl):
        where = f"numa_node[{i}]"
        check_fields(err, where, nd, NODE_TYPES)
        if "cpus" in nd:
            try:
                cpus = parse_cpulist(nd["cpus"])
            except ValueError as e:
                raise err(f"{where}.cpus", str(e)) from None
        elif len(decl) == sockets:
            cpus = package[i]                  # one node per socket: its package's CPUs
        else:
            raise err(f"{where}.cpus", f"missing: {len(decl)} nodes for {sockets} sockets, so each node names its CPUs")
        for c in cpus:
            if c >= n:
                raise err(f"{where}.cpus", f"CPU {c} is past the last CPU ({n - 1})")
            if c in owner:
                raise err(f"{where}.cpus", f"CPU {c} is also node {owner[c]}'s")
            owner[c] = i
        for bus in nd.get("buses", []):
            b = bus.lower()
            if b not in domains:
                raise err(f"{where}.buses", f"{bus!r} is not a root bus of this topology "
                                            f"(root buses: {', '.join(sorted(domains))})")
            if b in bus_owner:
                raise err(f"{where}.buses", f"{bus!r} is also node {bus_owner[b]}'s")
            bus_owner[b] = i
        dist = nd.get("distance")
        if dist is not None:
            if len(dist) != len(decl):
                raise err(f"{where}.distance", f"{len(dist)} distances for {len(decl)} nodes")
            for j, x in enumerate(dist):
                # numa_set_distance(): local is LOCAL_DISTANCE, remote above it
                if (j == i and x != LOCAL_DISTANCE) or (j != i and x <= LOCAL_DISTANCE):
                    raise err(f"{where}.distance", f"distance to node {j} is {x}: local must be {LOCAL_DISTANCE}, "
                                                   f"remote above {LOCAL_DISTANCE}")
        memory = _bytes(err, f"{where}.memory", nd.get("memory", "1G"), 4096)
        out.append({"cpus": cpus, "memory": memory, "distance": dist})
    missing = [c for c in range(n) if c not in owner]
    if missing:
        raise err("numa_node", f"CPU {missing[0]} is in no node (every CPU belongs to one)")
    return out
