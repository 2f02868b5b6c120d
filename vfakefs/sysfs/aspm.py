"""The link/ directory of a PCIe function with ASPM (drivers/pci/pcie/aspm.c)."""
from __future__ import annotations

from vfakefs.sysfs.nodes import Attr
from vfakefs.sysfs.parse import kstrtobool

L1_SUBSTATES = ("l1_1_aspm", "l1_2_aspm", "l1_1_pcipm", "l1_2_pcipm")


def aspm_show(dev, name: str) -> str:
    # link->aspm_enabled: the policy's state (the default policy keeps what firmware
    # enabled at boot: nothing, on these machines), minus what the user disabled
    return "0\n"


def aspm_store(dev, name: str, text: str) -> None:
    """aspm_attr_store_common() / clkpm_store(): kstrtobool, EINVAL otherwise. Enabling
    clears the state from link->aspm_disable (an L1 substate clears L1 too); disabling
    L1 disables its substates. pcie_config_aspm_link() then applies policy & ~disable,
    which with the default policy enables nothing firmware had left off."""
    enable = kstrtobool(text)
    off = set(dev.aspm_disable)
    if enable:
        off.discard(name)
        if name in L1_SUBSTATES:
            off.discard("l1_aspm")
    else:
        off.add(name)
        if name == "l1_aspm":
            off.update(L1_SUBSTATES)
    dev.aspm_disable = frozenset(off)


def link_entries(dev) -> dict:
    return {a: Attr(a, lambda o, a=a: aspm_show(o, a), lambda o, t, a=a: aspm_store(o, a, t), 0o644).bind(dev)
            for a in dev.aspm}
