"""What drivers print when they bind and unbind: each Driver's probe_log, probe_log_late,
remove_log and init_log (model/base/drivers.py) filled in from the device's state.

The lines are the drivers' own formats (dev_info: `<driver> <bdf>: ...`; netdev_info:
`<driver> <bdf> <ifname>: ...`); the fields come from the machine, never from a recording:

  {dev} {name}  the function's name           {ifname} {mac}  its first netdev
  {inst}        the driver's instance (nvme0)  {link}   `2.5GT/s:Width x1` (e1000e)
  {igb_link}    `PCIe:2.5Gb/s:Width x1` (igb)  {bandwidth}  pcie_print_link_status()'s text
  {queues}      queues a multiqueue driver takes: one per CPU up to its hardware's limit
  {pba}         the board's part number as read from a blank NVM (`000000-000`)
  and whatever the driver's hw_info gives for the device ID (mac_type, phy_type, model).
"""
from __future__ import annotations

from vfakefs.model.base.driver_ops import enabling_line
from vfakefs.model.net import permanent_address

# pcie_link_speed -> (pci_speed_string, Mb/s per lane after encoding: PCIE_SPEED2MBS_ENC)
SPEEDS = {1: ("2.5 GT/s PCIe", 2000), 2: ("5.0 GT/s PCIe", 4000), 3: ("8.0 GT/s PCIe", 7877),
          4: ("16.0 GT/s PCIe", 15754), 5: ("32.0 GT/s PCIe", 31508), 6: ("64.0 GT/s PCIe", 62000)}
MAX_QUEUES = 64     # what the simulated controllers offer (QEMU's NVMe max_ioqpairs; ixgbe's RSS+FDIR)


def _link(dev, current: bool) -> tuple[int, int]:
    """(speed code, width) from Link Status (current) or Link Capabilities."""
    pos = dev.pcie_cap
    reg = dev.config.r16(pos + 0x12) if current else dev.config.r32(pos + 0x0C)
    return reg & 0xF, (reg >> 4) & 0x3F


def bandwidth(dev) -> str:
    """pcie_print_link_status(): what the device's own link can carry against the narrowest
    link on the way to the root port (pcie_bandwidth_available)."""
    def bw(code: int, width: int) -> int:
        return width * SPEEDS.get(code, ("", 0))[1]
    cap_speed, cap_width = _link(dev, False)
    cap = bw(cap_speed, cap_width)
    avail, limiting, speed, width, up = None, None, 0, 0, dev
    while up is not None and up.pcie_cap is not None:
        s, w = _link(up, True)
        if avail is None or bw(s, w) <= avail:
            avail, limiting, speed, width = bw(s, w), up, s, w
        up = up.parent
    name = lambda code: SPEEDS.get(code, ("Unknown", 0))[0]   # noqa: E731
    if avail is None or avail >= cap:
        return "%u.%03u Gb/s available PCIe bandwidth (%s x%d link)" % (cap // 1000, cap % 1000, name(cap_speed),
                                                                        cap_width)
    return ("%u.%03u Gb/s available PCIe bandwidth, limited by %s x%d link at %s (capable of %u.%03u Gb/s "
            "with %s x%d link)" % (avail // 1000, avail % 1000, name(speed), width, limiting.name,
                                   cap // 1000, cap % 1000, name(cap_speed), cap_width))


class _Fields(dict):
    """A device its driver's hw_info does not list (bound through driver_override or new_id)
    probes as the driver's first board: its enum values read 0."""
    def __missing__(self, key):
        return 0


# per set of lines, the fields that cost something to fill: {inst}, the link ones, {bandwidth}
_NEEDS: dict[tuple, tuple[bool, bool, bool]] = {}


def _needs(lines) -> tuple[bool, bool, bool]:
    key = lines if isinstance(lines, tuple) else tuple(lines)
    got = _NEEDS.get(key)
    if got is None:
        text = "".join(key)
        got = _NEEDS[key] = ("{inst}" in text, "{link}" in text or "{igb_link}" in text, "{bandwidth}" in text)
    return got


def fields(m, drv, dev, lines) -> dict:
    """The values the driver's lines name (the PCIe ones only when asked for: a walk of the
    capability list that thousands of VFs probing at once should not pay)."""
    nd = dev.netdevs[0] if dev.netdevs else None
    inst, link, bw = _needs(lines)
    # the address is the EEPROM's, known before register_netdev (which a netdev rule may delay)
    mac = nd.mac if nd else permanent_address(m.hw.get(dev.bdf, {}).get("mac"), dev)
    name = dev.name
    out = _Fields({"dev": name, "name": name, "ifname": nd.name if nd else "", "mac": mac,
           "inst": drv.instance(dev) if inst else 0, "queues": min(m.nr_cpus, MAX_QUEUES), "pba": "000000-000",
           "link": "", "igb_link": "", "bandwidth": ""})
    out.update(drv.hw_info.get(dev.device, {}))
    if (link or bw) and dev.pcie_cap is not None:
        if link:
            speed, width = _link(dev, True)
            gts = SPEEDS.get(speed, ("Unknown", 0))[0].split(" PCIe")[0]
            out["link"] = f"{gts.replace(' ', '')}:Width x{width}"
            out["igb_link"] = "PCIe:%s:Width x%d" % ({1: "2.5Gb/s", 2: "5.0Gb/s"}.get(speed, "unknown"), width)
        if bw:
            out["bandwidth"] = bandwidth(dev)
    return out


def _fill(m, drv, dev, lines) -> list[str]:
    if not lines:
        return []                       # (most drivers print nothing late or at remove)
    f = fields(m, drv, dev, lines)
    return [f"{drv.name} {line.format_map(f)}" for line in lines]


def probe_lines(m, drv, dev, enabling: tuple[int, int] = (0, 0), late: bool = True) -> list[str]:
    """The probe's lines, with pci_enable_resources()'s `enabling device` where the command
    register changed, and (late) what the probe's asynchronous part prints once done (nvme's
    queues), unless the device never becomes ready (a QEMU NVMe VF: vf_probe_fails_after)."""
    lines = _fill(m, drv, dev, drv.probe_log)
    enabling_at = enabling_line(drv, dev, *enabling)
    if enabling_at:
        lines.insert(drv.probe_log_before_enable, enabling_at)
    if late:
        lines += late_lines(m, drv, dev)
    return lines


def late_lines(m, drv, dev) -> list[str]:
    pf = dev.physfn
    if pf is not None and pf.sriov is not None and pf.sriov.vf_probe_fails_after is not None:
        return []
    return _fill(m, drv, dev, drv.probe_log_late)


def remove_lines(m, drv, dev) -> list[str]:
    """What the driver's remove prints, while its netdev still exists (e1000e's `removed PHC`)."""
    return _fill(m, drv, dev, drv.remove_log)
