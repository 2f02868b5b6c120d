"""The whole mount: /sys and /dev drawn from one Machine.

The view owns every path: a device's directory, and every symlink target,
computed from where things sit in the tree, relative as the kernel writes them.
"""
from __future__ import annotations

import weakref

from vfakefs.model.host import Host
from vfakefs.sysfs import bus, devices, dirty, iommu, iommu_groups, kmsg, module, net, nvme, system, vfio
from vfakefs.sysfs.nodes import Attr, Dir


class View:
    def __init__(self, machine):
        """machine: a Machine, or the host.Host whose Machine a reset replaces."""
        self.host = machine if isinstance(machine, Host) else Host(machine)
        # a function's path never changes while it exists; the entry dies with it
        self._paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def m(self):
        """The Machine as it is now (a reset replaces it)."""
        return self.host.machine

    # --- paths (relative to /sys) ----------------------------------------------------
    def device_path(self, dev) -> str:
        p = self._paths.data.get(weakref.ref(dev))   # WeakKeyDictionary.get without its Python frame
        if p is None:
            parent = dev.physfn.parent if dev.is_virtfn else dev.parent
            base = self.device_path(parent) if parent is not None else self.root_path(*dev.root_bus)
            p = self._paths[dev] = f"{base}/{dev.name}"
        return p

    def root_path(self, domain: int = 0, bus: int = 0) -> str:
        """The host bridge of a root bus: pci<domain>:<bus> (pci_create_root_bus)."""
        return "devices/pci%04x:%02x" % (domain, bus)

    def netdev_path(self, nd) -> str:
        base = self.device_path(nd.dev)
        return f"{base}/{nd.subdir}/net/{nd.name}" if nd.subdir else f"{base}/net/{nd.name}"

    def dirty(self) -> list | None:
        """While the Machine notifies a change: the directories it may have altered
        (dirty.py); None: any."""
        return dirty.dirty(self, self.m.changes)

    # --- the tree -------------------------------------------------------------------
    def root(self) -> Dir:
        return Dir(lambda: {"sys": Dir(self.sys_entries, 0o555), "dev": self.dev_dir(),
                            "proc": Dir(self._proc_entries, 0o555),
                            "lib": Dir(self._lib_entries, 0o755)}, 0o755)

    # /proc, /lib and debugfs: their modules imported when first listed, off the mount path
    def _proc_entries(self) -> dict:
        from vfakefs.sysfs import proc
        return proc.proc_entries(self)

    @staticmethod
    def _lib_entries() -> dict:
        from vfakefs.sysfs import lib_modules
        return lib_modules.lib_dir().entries()       # (lib_dir(): 0755, as the Dir above)

    def dev_dir(self) -> Dir:
        base = vfio.dev_dir(self)
        return Dir(lambda: {**base.entries(), **kmsg.dev_entries(self)}, base.mode, tmpfs=True)

    def debug_entries(self) -> dict:
        from vfakefs.sysfs import debugfs_intel, vfakefs_debugfs
        return {"iommu": debugfs_intel.debug_iommu_dir(self),
                "vfakefs": Dir(lambda: {**vfakefs_debugfs.vfakefs_entries(self), **kmsg.debug_entries(self)})}

    def sys_entries(self) -> dict:
        # iommu_init() makes the iommu_groups kset at core_initcall: empty without an IOMMU
        kernel = {"debug": Dir(self.debug_entries, 0o700),
                  "iommu_groups": Dir(lambda: iommu_groups.groups_entries(self)),
                  # kobject_uevent.c's uevent_seqnum: the last SEQNUM sent (ksysfs.c, 0444)
                  "uevent_seqnum": Attr("uevent_seqnum", lambda v: "%d\n" % v.m.uevents.seqnum).bind(self)}
        return {
            "bus": Dir(lambda: {"pci": Dir(lambda: bus.pci_bus_entries(self)),
                                "pci_express": Dir(lambda: bus.pci_express_entries(self)),
                                "virtio": Dir(lambda: bus.virtio_entries(self)),
                                "cpu": Dir(lambda: system.bus_cpu_entries(self)),
                                "node": Dir(lambda: system.bus_node_entries(self))}),
            "class": Dir(lambda: {"net": Dir(lambda: net.class_net_entries(self)),
                                  "iommu": Dir(lambda: iommu.class_iommu_entries(self)),
                                  "nvme": Dir(lambda: nvme.class_nvme_entries(self)),
                                  "pci_bus": Dir(lambda: devices.class_pci_bus_entries(self))}),
            "devices": Dir(lambda: devices.devices_entries(self)),
            "kernel": Dir(kernel),
            "module": Dir(lambda: module.module_entries(self)),
            # the rest of every /sys, empty here
            **{name: Dir({}) for name in ("block", "dev", "firmware", "fs", "hypervisor", "power")},
        }
