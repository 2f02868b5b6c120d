"""The loaded modules (kernel/module/main.c): load with the dependency and parameter
checks load_module() makes, unload with delete_module()'s, the reference counts
/proc/modules and /sys/module/<m>/refcnt show.

A module's init registers its PCI drivers (pci_register_driver: the driver directory
appears, driver_attach binds the unbound devices it matches); its exit unregisters them
(every bound device goes through the driver's remove first). Each loaded module holds a
reference on every module it depends on (ref_module: the holders/ of those); the other
references (try_module_get) are the ones an open VFIO device takes on its driver's module
and the crypto API's on the implementation a library uses. Every operation checks
everything before its first change, so a refused one changes nothing.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from vfakefs.model import uevent
from vfakefs.model.base import module_init
from vfakefs.model.base import modules as catalogue
from vfakefs.model.base.modparams import next_arg, parse_args, parse_value
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ERR, KERN_WARNING

MODULES_VADDR = 0xFFFFFFFFC0000000      # x86_64: modules live from here (MODULES_VADDR)
PAGE = 4096


@dataclass(eq=False)
class Module:
    info: catalogue.ModuleInfo
    address: int                         # core_layout.base, as /proc/modules prints it
    uses: list = field(default_factory=list)   # modules it holds a reference on (module_use)
    refs: int = 0                        # try_module_get()s besides the dependents' (open fds, crypto)
    state: str = "Live"
    uses_crypto: str | None = None       # the implementation its crypto tfm holds

    @property
    def name(self) -> str:
        return self.info.name


class Modules:
    """The simulated kernel's module list, oldest first (/proc/modules prints newest first)."""

    def __init__(self, m):
        self.m = m
        self.loaded: dict[str, Module] = {}
        self._next = MODULES_VADDR + 0x200000

    # --- what is loaded ---------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.loaded

    def builtin(self, name: str) -> bool:
        info = catalogue.modules().get(name)
        return info is not None and info.builtin

    def newest_first(self) -> list[Module]:
        return list(reversed(self.loaded.values()))

    def holders(self, name: str) -> list[str]:
        """The loaded modules that use name, newest first (source_list order)."""
        return [mod.name for mod in self.newest_first() if name in mod.uses]

    def refcnt(self, name: str) -> int:
        """module_refcount(): one per holder plus every other reference."""
        return len(self.holders(name)) + self.loaded[name].refs

    def param(self, module: str, name: str):
        """A parameter's current value: what was set (at load or through sysfs), else the default."""
        key = (module, name)
        if key in self.m.module_params:
            return self.m.module_params[key]
        info = catalogue.modules().get(module)
        p = info.param(name) if info is not None else None
        if p is None or p.default is None:
            return None
        return parse_value(p, p.default, module)

    def proc_text(self, show_addresses: bool) -> str:
        """/proc/modules (kernel/module/procfs.c m_show): one line per module, newest first:
        name, size, refcnt, each holder followed by a comma (or "-"), the state, the
        address (zeros unless kallsyms_show_value(): CAP_SYSLOG, Debian's
        perf_event_paranoid keeping everyone else out)."""
        lines = []
        for mod in self.newest_first():
            holders = "".join(f"{h}," for h in self.holders(mod.name)) or "-"
            addr = mod.address if show_addresses else 0
            lines.append(f"{mod.name} {mod.info.coresize} {self.refcnt(mod.name)} {holders} {mod.state} 0x{addr:016x}\n")
        return "".join(lines)

    # --- references -------------------------------------------------------------------------
    def get(self, name: str | None) -> None:
        """try_module_get(): built-in code (name None or not loaded) needs no reference."""
        if name in self.loaded:
            self.loaded[name].refs += 1

    def put(self, name: str | None) -> None:
        if name in self.loaded and self.loaded[name].refs > 0:
            self.loaded[name].refs -= 1

    def get_driver(self, drv) -> str | None:
        """try_module_get(drv->owner): the module that registered drv, which the caller
        puts back later (None when built in: nothing to hold)."""
        info = catalogue.of_driver(drv.name) if drv is not None else None
        name = info.name if info is not None and info.name in self.loaded else None
        self.get(name)
        return name

    # --- boot -------------------------------------------------------------------------------------
    def boot(self, plan: list[tuple[str, int | None]], cmdline: str = "") -> None:
        """What the boot loaded, in load order ((name, address); None: the next free
        address): the state only, no init (their drivers are the Machine's already).
        The command line's `module.param=value` words set the parameters of built-in
        modules (parse_args at boot) and of the modules loaded (modprobe reads
        /proc/cmdline for its options); a value the type refuses is left out."""
        for name, address in plan:
            info = catalogue.modules()[name]
            self._insert(info, address)
        for module, pname, value in cmdline_params(cmdline):
            info = catalogue.modules().get(module)
            p = info.param(pname) if info is not None else None
            if p is None or not (info.builtin or module in self.loaded):
                continue
            try:
                self.m.module_params[(module, p.name)] = parse_value(p, value, module)
            except SysfsError:
                continue

    def _insert(self, info: catalogue.ModuleInfo, address: int | None = None) -> Module:
        if address is None:
            address = self._next
        self._next = max(self._next, address + -(-info.coresize // PAGE) * PAGE + PAGE)
        mod = Module(info, address, uses=[d for d in info.depends])
        for impl in info.crypto_users:      # crypto_alloc_shash(): the best loaded implementation
            if impl in self.loaded:
                self.loaded[impl].refs += 1
                mod.uses_crypto = impl
                break
        self.loaded[info.name] = mod
        return mod

    # --- init_module / finit_module ----------------------------------------------------------------
    def load(self, name: str, args: str = "") -> Module:
        """load_module() for the module named name: EEXIST when it is loaded, ENOENT (with
        the kernel's "Unknown symbol" lines) when a module it needs is not, EINVAL for a
        parameter value its type refuses; then do_init_module()."""
        info = catalogue.modules().get(name)
        if info is None or info.builtin:
            raise SysfsError(errno.ENOEXEC)      # no such object in this kernel's tree
        if name in self.loaded:
            raise SysfsError(errno.EEXIST)
        missing = [d for d in info.depends if d not in self.loaded]
        if missing:
            for dep in missing:                  # simplify_symbols(): one line per symbol
                sym = catalogue.modules()[dep].symbol or f"{dep}_init"
                self.m.kmsg.log(f"{name}: Unknown symbol {sym} (err -2)", KERN_WARNING)
            raise SysfsError(errno.ENOENT)
        values, unknown = parse_args(info, args, lambda line: self.m.kmsg.log(line, KERN_ERR))
        for key in unknown:
            self.m.kmsg.log(f"{name}: unknown parameter '{key}' ignored", KERN_WARNING)
        mod = self._insert(info)
        self.m.uevent("add", uevent.Kobj(self.m, f"/module/{name}", "module"))   # mod_sysfs_setup, before init
        for pname, value in values.items():
            self.m.module_params[(name, pname)] = value
        for line in info.init_log:
            self.m.kmsg.log(line)
        module_init.init(self.m, mod, values)
        self.m.changed()
        return mod

    # --- delete_module ---------------------------------------------------------------------------
    def unload(self, name: str, flags: int = 0) -> None:
        """delete_module(): ENOENT when not loaded (built-in modules never are), EWOULDBLOCK
        while another module depends on it or anything holds a reference (no forced unload:
        Debian has no CONFIG_MODULE_FORCE_UNLOAD), EBUSY while not live; then its exit."""
        mod = self.loaded.get(name)
        if mod is None:
            raise SysfsError(errno.ENOENT)
        if self.holders(name):
            raise SysfsError(errno.EWOULDBLOCK)
        if mod.state != "Live":
            raise SysfsError(errno.EBUSY)
        if mod.refs:
            raise SysfsError(errno.EWOULDBLOCK)
        mod.state = "Unloading"
        module_init.exit(self.m, mod)
        self.put(mod.uses_crypto)
        del self.loaded[name]
        for key in [k for k in self.m.module_params if k[0] == name]:
            del self.m.module_params[key]
        self.m.uevent("remove", uevent.Kobj(self.m, f"/module/{name}", "module"))   # mod_sysfs_teardown
        self.m.changed()


def cmdline_params(cmdline: str) -> list[tuple[str, str, str | None]]:
    """(module, parameter, value) for each `module.param[=value]` word (dashes and
    underscores alike in both names, as parameq and modprobe compare them)."""
    out, pos = [], 0
    while True:
        word, value, pos = next_arg(cmdline, pos)
        if not word:
            return out
        module, dot, pname = word.partition(".")
        if dot and module and pname:
            out.append((catalogue.module_name(module), pname.replace("-", "_"), value))


def boot_plan(m, recorded: list | None) -> list[tuple[str, int | None]]:
    """The modules a boot loads: the recorded list of one real boot (name, address), or
    what the registered drivers need: each driver's module after its soft `pre:`
    dependencies and its dependencies (as modprobe loads them), then its `post:` ones."""
    if recorded:
        return [(name, address) for name, address in recorded]
    mods = catalogue.modules()
    plan: list[str] = []

    def modprobe(name: str) -> None:
        info = mods.get(name)
        if info is None or info.builtin or name in plan:
            return
        for pre in info.softdep_pre:
            for alias in _resolve(pre):
                modprobe(alias)
        for dep in reversed(catalogue.dep_order(name)):
            modprobe(dep)
        if name not in plan:
            plan.append(name)
        for post in info.softdep_post:
            modprobe(post)
    for drv in list(m.drivers.values()):
        info = catalogue.of_driver(drv.name)
        if info is not None:
            modprobe(info.name)
        if drv.child_module:
            modprobe(drv.child_module)
    return [(name, None) for name in plan]


def _resolve(name: str) -> list[str]:
    """A softdep names a module or an alias (crct10dif: every implementation)."""
    mods = catalogue.modules()
    if name in mods:
        return [name]
    return [mod.name for mod in mods.values() if name in mod.aliases]


def check_refs(m) -> None:
    """Invariants: every loaded module's dependencies are loaded."""
    for mod in m.modules.loaded.values():
        for d in mod.uses:
            assert d in m.modules.loaded, f"{mod.name} uses {d}, not loaded"
    for drv in m.drivers.values():
        info = catalogue.of_driver(drv.name)
        assert info is None or info.builtin or info.name in m.modules.loaded, f"{drv.name}: module not loaded"
