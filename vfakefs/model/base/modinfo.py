"""A module's record (what modinfo and /lib/modules say of it) and its parameters."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Param:
    """One module_param(): parmtype as modinfo prints it (None for module_param_cb, which
    declares none), the sysfs mode (0: no file), what the file reads before any write
    (without the newline; None when mode is 0), and MODULE_PARM_DESC."""
    name: str
    type: str | None
    mode: int
    default: str | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    name: str                                  # the kernel's name (KBUILD_MODNAME): underscores
    path: str | None                           # below /lib/modules/<release>/; None when built in
    depends: tuple[str, ...] = ()              # direct dependencies, by name
    builtin: bool = False
    drivers: tuple[str, ...] = ()              # PCI drivers its init registers
    params: tuple[Param, ...] = ()
    description: str = ""
    authors: tuple[str, ...] = ()
    license: str = "GPL"
    version: str | None = None                 # MODULE_VERSION (then srcversion too)
    coresize: int = 16384
    softdep_pre: tuple[str, ...] = ()          # MODULE_SOFTDEP("pre: ...")
    softdep_post: tuple[str, ...] = ()         # MODULE_SOFTDEP("post: ...")
    aliases: tuple[str, ...] = ()              # MODULE_ALIAS beyond the PCI id tables
    # modules whose init takes a reference without depending on them: the crypto API's
    # try_module_get on the highest-priority loaded implementation, first loaded one wins
    crypto_users: tuple[str, ...] = ()
    init_log: tuple[str, ...] = ()             # what its init prints
    symbol: str | None = None                  # one symbol it exports (what "Unknown symbol" names)

    @property
    def file_name(self) -> str | None:
        return self.path.rsplit("/", 1)[1] if self.path else None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)
