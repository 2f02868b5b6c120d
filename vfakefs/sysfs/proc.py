"""MNT/proc/: the simulated kernel's own answers for the /proc files whose contents
depend on the machine, which `vfakefs run` binds over the host's inside its mount
namespace (as LXCFS does for containers); the rest of /proc stays the host's.

- cmdline (fs/proc/cmdline.c): the topology's kernel command line and a newline.
- interrupts (kernel/irq/proc.c): the functions' MSI/MSI-X irqs with their per-CPU
  counts and the posted-interrupt notification line (interrupts.py; no IOAPIC,
  timer or IPI lines).
- cpuinfo (arch/x86/kernel/cpu/proc.c): the topology's CPUs (cpuinfo.py).
- modules (kernel/module/procfs.c): the loaded modules, newest first (sysfs/module.py);
  addresses only for root, as for a reader with CAP_SYSLOG.
- iomem (kernel/resource.c): the machine's memory resources (model/iomem.py), their
  addresses zeroed unless the opener is root (r_show's CAP_SYS_ADMIN check on the
  file's credentials).
All 0444 and reporting size 0, as procfs files do."""
from __future__ import annotations

from vfakefs.sysfs.cpuinfo import cpuinfo_show
from vfakefs.sysfs.interrupts import interrupts_show
from vfakefs.model import iomem
from vfakefs.sysfs.module import PROC_MODULES
from vfakefs.sysfs.nodes import Attr, BinAttr

PROC = (
    Attr("cmdline", lambda m: m.cmdline + "\n", None, 0o444, size=0),
    Attr("interrupts", interrupts_show, None, 0o444, size=0),
    Attr("cpuinfo", cpuinfo_show, None, 0o444, size=0),        # cpuinfo.py
    PROC_MODULES,
    BinAttr("iomem", lambda m, off, n, capable: iomem.show(m, capable).encode()[off:off + n], None, 0o444, size=0),
)


def proc_entries(v) -> dict:
    return {a.name: a.bind(v.m) for a in PROC}
