"""/sys/module and /proc/modules (kernel/module/sysfs.c, kernel/params.c,
kernel/module/procfs.c).

A loaded module's directory: the modinfo attributes (version, srcversion, initstate,
coresize, initsize, taint, refcnt, uevent), holders/ (a link per module using it),
drivers/ (<bus>:<driver> links, module_add_driver), parameters/ (every module_param
with a sysfs mode), sections/ (0400: addresses only for CAP_SYSLOG) and notes/.
A built-in module has a directory only when it has a parameter with a sysfs mode
(param_sysfs_builtin): parameters/ and uevent, no initstate (kmod learns "builtin" from
modules.builtin; a directory without initstate alone reads as "coming"). A driver's `module` link exists when its module's directory
does (module_add_driver finds the kobject by name): so built-in drivers without
parameters (pcieport, serial, 8250_*, agpgart-*) have none.
"""
from __future__ import annotations

import hashlib

from vfakefs.model.base import modules as catalogue
from vfakefs.model.base.modparams import parse_value, show_value
from vfakefs.sysfs.nodes import Attr, BinAttr, Dir, Link, rel
from vfakefs.sysfs.pci_sysfs import uevent_store

INITSTATE = {"Live": "live", "Loading": "coming", "Unloading": "going"}


def has_dir(m, name: str) -> bool:
    """Whether /sys/module/<name> exists: loaded, or built in with a visible parameter,
    or named by a hotplug slot (its driver is built in)."""
    if name in m.modules.loaded:
        return True
    info = catalogue.modules().get(name)
    if info is not None and info.builtin and any(p.mode for p in info.params):
        return True
    return any(s.module == name for s in m.slots)


def driver_module(m, drv) -> str | None:
    """The module a driver directory's `module` link names, if its directory exists."""
    info = catalogue.of_driver(drv.name)
    name = info.name if info is not None else drv.module_name
    return name if has_dir(m, name) else None


def _param_attr(m, module: str, p) -> Attr:
    def show(_):
        return show_value(p, m.modules.param(module, p.name))

    def store(_, text: str) -> None:
        m.module_params[(module, p.name)] = parse_value(p, text, module)   # param_attr_store: the set op's errno
    return Attr(p.name, show, store if p.mode & 0o222 else None, p.mode)


def parameters_dir(m, info) -> Dir:
    return Dir(lambda: {p.name: _param_attr(m, info.name, p).bind(None) for p in info.params if p.mode})


def _drivers_dir(v, name: str) -> dict:
    here = f"module/{name}/drivers"
    return {f"pci:{d.name}": Link(rel(here, f"bus/pci/drivers/{d.name}"))
            for d in v.m.drivers.values() if driver_module(v.m, d) == name}


def _hex_or_zero(address: int):
    """module_sect_read(): the address for CAP_SYSLOG, zeros for everyone else."""
    def read(_, off: int, n: int, privileged: bool) -> bytes:
        return f"0x{address if privileged else 0:016x}\n".encode()[off:off + n]
    return read


# what sections/ lists (a module's allocated ELF sections: the common ones)
SECTIONS = (".text", ".rodata", ".data", ".bss", ".gnu.linkonce.this_module", "__mcount_loc",
            ".note.gnu.build-id", ".strtab", ".symtab")


def _build_id(name: str) -> bytes:
    """.note.gnu.build-id: an ELF note (namesz 4, descsz 20, type 3, "GNU\\0", the id)."""
    return (4).to_bytes(4, "little") + (20).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"GNU\0" \
        + hashlib.sha1(name.encode()).digest()


def loaded_entries(v, mod) -> dict:
    m, info = v.m, mod.info
    out = {
        "coresize": Attr("coresize", lambda _: f"{info.coresize}\n").bind(None),
        "initsize": Attr("initsize", lambda _: "0\n").bind(None),          # freed after init
        "initstate": Attr("initstate", lambda _: INITSTATE[mod.state] + "\n").bind(None),
        "refcnt": Attr("refcnt", lambda _: f"{m.modules.refcnt(mod.name)}\n").bind(None),
        "taint": Attr("taint", lambda _: "\n").bind(None),                  # in tree, signed
        "srcversion": Attr("srcversion", lambda _: catalogue.srcversion(info) + "\n").bind(None),
        "uevent": Attr("uevent", None, uevent_store, 0o200).bind(None),
        "holders": Dir(lambda: {h: Link(f"../../{h}") for h in m.modules.holders(mod.name)}),
        "notes": Dir({".note.gnu.build-id": BinAttr(".note.gnu.build-id",
                                                    lambda _, off, n, p: _build_id(info.name)[off:off + n],
                                                    None, 0o444, 36).bind(None)}),
        "sections": Dir(lambda: {s: BinAttr(s, _hex_or_zero(mod.address + 0x1000 * i), None, 0o400, 19).bind(None)
                                 for i, s in enumerate(SECTIONS)}),
    }
    if info.version:
        out["version"] = Attr("version", lambda _: info.version + "\n").bind(None)
    if any(p.mode for p in info.params):
        out["parameters"] = parameters_dir(m, info)
    drivers = _drivers_dir(v, mod.name)
    if drivers:
        out["drivers"] = Dir(lambda: _drivers_dir(v, mod.name))
    return out


def builtin_entries(v, name: str) -> dict:
    """param_sysfs_builtin's directory: parameters/ and uevent; drivers/ once one registers."""
    info = catalogue.modules().get(name)
    out = {"uevent": Attr("uevent", None, uevent_store, 0o200).bind(None)}
    if info is not None and any(p.mode for p in info.params):
        out["parameters"] = parameters_dir(v.m, info)
    drivers = _drivers_dir(v, name)
    if drivers:
        out["drivers"] = Dir(lambda: _drivers_dir(v, name))
    return out


def module_entries(v) -> dict:
    m = v.m
    names = {info.name for info in catalogue.modules().values() if info.builtin and has_dir(m, info.name)}
    names |= {s.module for s in m.slots}
    out = {n: Dir(lambda n=n: builtin_entries(v, n)) for n in names}
    for mod in m.modules.loaded.values():
        out[mod.name] = Dir(lambda mod=mod: loaded_entries(v, mod))
    return dict(sorted(out.items()))


# --- /proc/modules (kernel/module/procfs.c m_show) ---------------------------------------------------
def proc_modules_read(m, off: int, n: int, privileged: bool) -> bytes:
    return m.modules.proc_text(privileged).encode()[off:off + n]


PROC_MODULES = BinAttr("modules", proc_modules_read, None, 0o444, 0)
