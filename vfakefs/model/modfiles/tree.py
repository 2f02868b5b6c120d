"""/lib/modules/<release>/ of the simulated kernel, generated from the module catalogue
(model/base/modules.py) and the drivers' id tables (model/base/drivers.py): a .ko per
loadable module at its path, and the files depmod would write over those .ko files
(modules.dep, modules.alias, modules.symbols and their .bin indexes, modules.softdep,
modules.devname, modules.builtin.bin, modules.builtin.alias.bin), beside the ones the
kernel build installs (modules.order, modules.builtin, modules.builtin.modinfo).

What depmod computes is computed here the way kmod 30's depmod does, so that `depmod -b`
over our own .ko files writes the same indexes (tests/model/test_modfiles.py runs it):
- a module's index (its "priority" in every index) is its line in modules.order;
- a dependency is a module exporting a symbol the module uses; the dependency list of a
  module is every module it needs directly or not, ordered by a topological sort of the
  whole graph (modules no one uses first, taken from a stack: depmod_calculate_dependencies);
- aliases are indexed with '-' turned into '_' outside brackets (underscores2).

A pure function of the catalogue and the release: the view caches it.
"""
from __future__ import annotations

from vfakefs.model.base import drivers as drivers_mod
from vfakefs.model.base import modules as modules_mod
from vfakefs.model.modfiles.elf import module_object
from vfakefs.model.modfiles.file2alias import pci_aliases
from vfakefs.model.modfiles.khash import hash_order
from vfakefs.model.modfiles.kindex import index_bytes

# The top-level Makefile's order of directories (core-y, drivers-y, libs-y), which is the
# order of modules.order: each module's line there is its priority in the indexes.
_KBUILD_ORDER = ("arch", "kernel", "certs", "mm", "fs", "ipc", "security", "crypto", "block", "io_uring",
                 "drivers", "sound", "net", "virt", "lib")

# Built-in modules with a MODULE_LICENSE: in built-in code it also records the object's
# file (MODULE_FILE: "<name>.file=<KBUILD_MODFILE>" in modules.builtin.modinfo), and
# modules.builtin is those files (6.1's Makefile: the file= tags, "kernel/" and ".ko" added).
# Built-in code without one (pcieport's portdrv) has no file and is not listed.
BUILTIN_FILES = {
    "acpiphp": "kernel/drivers/pci/hotplug/acpiphp.ko",
    "pciehp": "kernel/drivers/pci/hotplug/pciehp.ko",
    "shpchp": "kernel/drivers/pci/hotplug/shpchp.ko",
    "8250_pci": "kernel/drivers/tty/serial/8250/8250_pci.ko",
    "8250_mid": "kernel/drivers/tty/serial/8250/8250_mid.ko",
    "8250_pericom": "kernel/drivers/tty/serial/8250/8250_pericom.ko",
    "intel_agp": "kernel/drivers/char/agp/intel-agp.ko",
    "sis_agp": "kernel/drivers/char/agp/sis-agp.ko",
    "via_agp": "kernel/drivers/char/agp/via-agp.ko",
    "iosf_mbi": "kernel/arch/x86/platform/intel/iosf_mbi.ko",
}


def vermagic(release: str) -> str:
    # VERMAGIC_STRING of Debian's amd64 kernels: each flag followed by a space
    return f"{release} SMP preempt mod_unload modversions "


def _file_stem(path: str) -> str:
    return path.rsplit("/", 1)[1].removesuffix(".ko")


def _underscores(alias: str) -> str:
    out, depth = [], False
    for c in alias:   # depmod's underscores2: '-' -> '_' outside [...]
        depth = (depth or c == "[") and c != "]"
        out.append("_" if c == "-" and not depth else c)
    return "".join(out)


def _order(mods: list) -> list:
    top = {d: k for k, d in enumerate(_KBUILD_ORDER)}
    return sorted(mods, key=lambda m: top.get(m.path.split("/")[1], len(top)))


def _export(mod) -> str:
    """The symbol the module's users take from it (what makes depmod see the dependency)."""
    return mod.symbol or f"{mod.name}_ops"


def _softdep(mod) -> str | None:
    parts = ([f"pre: {' '.join(mod.softdep_pre)}"] if mod.softdep_pre else []) + \
            ([f"post: {' '.join(mod.softdep_post)}"] if mod.softdep_post else [])
    return " ".join(parts) or None


def _source_info(mod, file: str | None = None) -> list[tuple[str, str]]:
    """The MODULE_* strings of the module's own source, as the section holds them (the
    compiler emits a unit's variables last first: modinfo prints the last declared first).
    Built in, MODULE_LICENSE is MODULE_FILE then the license: file is where the code came
    from, and code without it declared no license."""
    out = []
    if (sd := _softdep(mod)) is not None:
        out.append(("softdep", sd))
    out += [("alias", a) for a in reversed(mod.aliases)]
    if mod.version:
        out.append(("version", mod.version))
    if not mod.builtin:
        out.append(("license", mod.license))
    elif file is not None:
        out += [("license", mod.license), ("file", file)]
    if mod.description:
        out.append(("description", mod.description))
    out += [("author", a) for a in mod.authors]
    for p in reversed(mod.params):   # module_param then MODULE_PARM_DESC, reversed
        if p.description:
            out.append(("parm", f"{p.name}:{p.description}"))
        if p.type is not None:
            out.append(("parmtype", f"{p.name}:{p.type}"))
    return out


def modinfo(mod, by_name: dict, drivers: dict, release: str) -> list[tuple[str, str]]:
    """The .modinfo of a loadable module: its source's strings, then what modpost's .mod.c
    adds (reversed as well): srcversion (every module: Debian's MODULE_SRCVERSION_ALL), the
    id tables' aliases, depends (the dependencies' file names), retpoline, intree, name, vermagic."""
    out = _source_info(mod) + [("srcversion", modules_mod.srcversion(mod))]
    table = [a for d in mod.drivers if d in drivers for a in pci_aliases(drivers[d].id_table)]
    out += [("alias", a) for a in reversed(table)]
    out.append(("depends", ",".join(_file_stem(by_name[d].path) for d in mod.depends)))
    out += [("retpoline", "Y"), ("intree", "Y"), ("name", mod.name), ("vermagic", vermagic(release))]
    return out


def _dependencies(order: list, deps: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each module's full dependency list as depmod writes it (mod_get_all_sorted_dependencies
    ordered by the topological index of depmod_calculate_dependencies)."""
    names = [m.name for m in order]
    users = {n: 0 for n in names}
    for n in names:
        for d in deps[n]:
            users[d] += 1
    roots = [n for n in names if users[n] == 0]
    topo: dict[str, int] = {}
    while roots:
        src = roots.pop()
        topo[src] = len(topo)
        for d in deps[src]:
            users[d] -= 1
            if users[d] == 0:
                roots.append(d)
    if len(topo) < len(names):
        raise ValueError("dependency cycle among " + ", ".join(n for n in names if n not in topo))
    out = {}
    for n in names:
        seen: list[str] = []
        stack = list(reversed(deps[n]))
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.append(d)
                stack.extend(reversed(deps[d]))
        out[n] = sorted(seen, key=topo.__getitem__)
    return out


def module_tree(release: str, mods: dict | None = None, drivers: dict | None = None) -> dict[str, bytes]:
    """{path below /lib/modules/<release>/: content} of every file."""
    mods = modules_mod.modules() if mods is None else mods
    drivers = drivers_mod.catalogue() if drivers is None else drivers
    order = _order([m for m in mods.values() if not m.builtin])
    prio = {m.name: k for k, m in enumerate(order)}
    deps = {m.name: list(dict.fromkeys(m.depends)) for m in order}
    used = {d for m in order for d in m.depends}
    files: dict[str, bytes] = {}
    infos = {}
    for m in order:
        infos[m.name] = info = modinfo(m, mods, drivers, release)
        files[m.path] = module_object(info, [_export(m)] if m.name in used else [],
                                      [_export(mods[d]) for d in deps[m.name]])
    full = _dependencies(order, deps)

    dep_lines = [(m, m.path + ":" + "".join(" " + mods[d].path for d in full[m.name])) for m in order]
    files["modules.dep"] = "".join(line + "\n" for _, line in dep_lines).encode()
    files["modules.dep.bin"] = index_bytes((m.name, line, prio[m.name]) for m, line in dep_lines)

    aliases = [(a, m.name) for m in order for k, a in infos[m.name] if k == "alias"]
    files["modules.alias"] = ("# Aliases extracted from modules themselves.\n"
                              + "".join(f"alias {a} {n}\n" for a, n in aliases)).encode()
    files["modules.alias.bin"] = index_bytes((_underscores(a), n, prio[n]) for a, n in aliases)

    softdeps = "".join(f"softdep {m.name} {v}\n" for m in order for k, v in infos[m.name] if k == "softdep")
    files["modules.softdep"] = ("# Soft dependencies extracted from modules themselves.\n" + softdeps).encode()

    # in the order of depmod's symbol hash table (2048 buckets)
    owner = {_export(mods[n]): n for n in used}
    syms = [(s, owner[s]) for s in hash_order(owner, 2048)]
    files["modules.symbols"] = ("# Aliases for symbols, used by symbol_request().\n"
                                + "".join(f"alias symbol:{s} {n}\n" for s, n in syms)).encode()
    files["modules.symbols.bin"] = index_bytes((f"symbol:{s}", n, prio[n]) for s, n in syms)

    devname = []
    for m in order:
        node = next((a.removeprefix("devname:") for k, a in infos[m.name] if k == "alias"
                     and a.startswith("devname:")), None)
        char = next((a for k, a in infos[m.name] if k == "alias" and a.startswith("char-major-")), None)
        if node and char:
            major, minor = char.removeprefix("char-major-").split("-")
            devname.append(f"{m.name} {node} c{int(major)}:{int(minor)}\n")
    files["modules.devname"] = ("# Device nodes to trigger on-demand module loading.\n" + "".join(devname)).encode()

    files["modules.order"] = "".join(m.path + "\n" for m in order).encode()
    builtins = [m for m in mods.values() if m.builtin]
    modfile = {m.name: BUILTIN_FILES[m.name].removeprefix("kernel/").removesuffix(".ko")
               for m in builtins if m.name in BUILTIN_FILES}
    binfo = [(m.name, k, v) for m in builtins for k, v in _source_info(m, modfile.get(m.name))]
    listed = list(dict.fromkeys(f"kernel/{v}.ko" for _, k, v in binfo if k == "file"))
    files["modules.builtin"] = "".join(p + "\n" for p in listed).encode()
    files["modules.builtin.bin"] = index_bytes((_file_stem(p).replace("-", "_"), "", 0) for p in listed)
    files["modules.builtin.modinfo"] = b"".join(f"{n}.{k}={v}".encode() + b"\0" for n, k, v in binfo)
    files["modules.builtin.alias.bin"] = index_bytes((_underscores(v), n, 0) for n, k, v in binfo if k == "alias")
    return files
