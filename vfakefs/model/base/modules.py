"""The simulated kernel's modules: what `modinfo` and /lib/modules/<release>/ say of each
(Debian 6.1 amd64), as module-level data needing no Machine.

Each ModuleInfo is one module as its source declares it: the file depmod finds it in, its
direct dependencies (the `depends=` modpost writes: modules whose symbols it uses), the
MODULE_SOFTDEP lines, the PCI drivers its init registers (by driver name: their id tables
are drivers.catalogue()'s), its module_param()s with their MODULE_PARM_DESC, MODULE_*
strings, and the size /proc/modules prints. Built-in modules (builtin=True) have no file;
a built-in module shows in /sys/module only when it has a parameter with a sysfs mode
(param_sysfs_builtin), and its drivers then have a `module` link (module_add_driver looks
the name up); the others' drivers have none.

The records are module_table.py's. Sizes of the modules the reference machine loads are
the reference's /proc/modules; the others are estimates of Debian's (never read from a
real load), as are the dependencies and parameters of modules the reference did not load.
"""
from __future__ import annotations

from vfakefs.model.base.modinfo import ModuleInfo, Param  # noqa: F401 (the records' shape)
from vfakefs.model.base.module_table import MODULES as _MODULES


def modules() -> dict[str, ModuleInfo]:
    """Every module the simulated kernel knows, by name (records are immutable: share them)."""
    return _BY_NAME


_BY_NAME: dict[str, ModuleInfo] = {mod.name: mod for mod in _MODULES}


def module_name(name: str) -> str:
    """The kernel's name for what a user typed (modprobe's underscores: pci-stub -> pci_stub)."""
    return name.replace("-", "_")


def of_driver(driver: str) -> ModuleInfo | None:
    """The module whose init registers the PCI driver named driver."""
    return _BY_DRIVER.get(driver)


_BY_DRIVER: dict[str, ModuleInfo] = {d: mod for mod in _MODULES for d in mod.drivers}


def dep_order(name: str) -> list[str]:
    """Every module name needs loaded first, in modules.dep's order: each module before
    the ones it depends on (modprobe loads the list back to front)."""
    post: list[str] = []

    def visit(n: str) -> None:
        for d in _BY_NAME[n].depends:
            if d not in post:
                visit(d)
        if n not in post:
            post.append(n)
    for d in _BY_NAME[name].depends:
        visit(d)
    return post[::-1]


def closure(name: str) -> set[str]:
    """Every module name depends on, directly or not."""
    seen: set[str] = set()
    todo = list(_BY_NAME[name].depends)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(_BY_NAME[n].depends)
    return seen


def srcversion(mod: ModuleInfo) -> str:
    """The `srcversion` modpost writes (Debian: CONFIG_MODULE_SRCVERSION_ALL), 23 hex
    digits; a stable made-up digest here, the same for modinfo and /sys/module."""
    import hashlib
    return hashlib.md5(("srcversion:" + mod.name).encode()).hexdigest().upper()[:23]


def builtin_names() -> list[str]:
    return [mod.name for mod in _MODULES if mod.builtin]


def loadable() -> list[ModuleInfo]:
    return [mod for mod in _MODULES if not mod.builtin]
