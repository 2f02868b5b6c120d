"""MNT/sys/kernel/debug/vfakefs/: vfakefs's own controls, beside the kernel's
debugfs knobs (model/controls.py holds what they do).

`dma` and `msi` answer per open file: write a request, then read the answer
of the last request made on that same file descriptor:

    dma  <bdf> read <iova> <length>                 translation line, then `data <hex>`
    dma  <bdf> write <iova> <length> [data=<hex>]   translation line (+ `wrote <n> of <length> bytes`)
    msi  <bdf> <address> <data>                     what interrupt remapping did with it
    msi  <bdf> vector <n>                           the same, for the message vector n has programmed
    physmem <hpa> <qword>... | dump <hpa> [<n>]     the qwords of that range (model/vtd_controls.py)

`interrupts` is /proc/interrupts for the functions' MSI/MSI-X irqs (sysfs/interrupts.py);
`posted` posts a vector to a vCPU's posted-interrupt descriptor or gives it back
(model/posted.py): `<bdf> vector <n> pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]`,
`<bdf> vector <n> remapped`; reading it lists the posted vectors.

`scenario`: write the absolute path of a scenario file (model/scenario.py) to run its timed
steps on the engine's clock (fuse/timeline.py), `stop` to stop it; reading it gives its state,
step k/n, runs done, the next run and its time, and the failures.

`carrier` (`<interface> 1|0`) plugs or pulls an interface's cable (carrier, operstate;
the interface of `vfakefs run`'s network namespace follows); reading it lists them.

`fpd` (`<bdf> 1|0`) and `regset` (`<register> <value>`) act on the VT-d unit and read
back its state; they and `physmem` are root only (0600).

`hotplug` (`add <port|slot> <card.toml>`, `remove <bdf|slot>`) plugs a card described by
[[device]] tables into a pciehp slot, or pulls one out without warning; reading it lists
the slots: empty, occupied, or removing (waiting for a VFIO user).

atc_stats (read only): per function with the ATS capability, whether ATS is on and its
device ATC's hits, misses (translation requests), invalidations and entries.

dma_stats (read only): the engine's simulated clock, then per function its DMA requests,
bytes, faulted requests, the IOTLB hits and misses of its requests and the faults the
handler serviced (model/iommu/dma_stats.py); what `vfakefs top` turns into rates.

requests (read only): the FUSE requests the mount has served since it was mounted, one
`<opcode> <count>` line per request type (pyfuse3's handler names, in FUSE opcode order;
fuse/ops.py counts them): what a read, a stat or a walk costs, counted exactly.

`faults` holds the rules of misbehaving hardware (model/faults.py, fault_control.py): `<bdf> <point>
[delay=<s>] [fail=<ERRNO>] [times=<N>|always]` adds one, `clear` drops them; reading it
lists them with their hit counts.

A request is one write of at most 4096 bytes, as any sysfs store."""
from __future__ import annotations

import errno

from vfakefs.model import controls, fault_control, posted, traffic, vtd_controls
from vfakefs.sysfs.interrupts import interrupts_show
from vfakefs.model.iommu import ats, dma_stats
from vfakefs.model.pci import hotplug_slot
from vfakefs.sysfs.nodes import Attr


def _answer_show(m, state) -> str:
    return state.get("answer", "")


def dma_store(m, text: str, state) -> None:
    state["answer"] = controls.dma_request(m, text)


def msi_store(m, text: str, state) -> None:
    state["answer"] = controls.msi(m, text)


def physmem_show(m, state) -> str:
    return state["answer"] if "answer" in state else vtd_controls.physmem_show(m)


def physmem_store(m, text: str, state) -> None:
    state["answer"] = vtd_controls.physmem_request(m, text)


def store_points(dev) -> list[str]:
    """The files a write reaches in a device's directory (those of its attribute groups
    with a store), or of any device's when dev is None (a VF or hot-plugged device to come)."""
    from vfakefs.sysfs import iov, pci_sysfs
    return [a.name for g in pci_sysfs.GROUPS + iov.GROUPS if dev is None or g.is_visible(dev)
            for a in g.attrs if getattr(a, "store", None) is not None]


def faults_store(m, text: str) -> None:
    fault_control.faults_command(m, text, store_points)


CONTROLS = (
    Attr("dma", _answer_show, dma_store, 0o600, per_open=True),
    Attr("msi", _answer_show, msi_store, 0o600, per_open=True),
    Attr("traffic", traffic.traffic_show, traffic.traffic_command, 0o644),
    Attr("interrupts", interrupts_show, None, 0o444, size=0),
    Attr("posted", posted.posted_show, posted.posted_command, 0o644, size=0),
    Attr("carrier", controls.carrier_show, controls.carrier_command, 0o644),   # `<interface> 1|0`: a cable
    Attr("fault_threshold", lambda m: f"{m.fault_threshold}\n", controls.set_fault_threshold, 0o644),
    Attr("fpd", vtd_controls.fpd_show, vtd_controls.fpd_store, 0o600),
    Attr("physmem", physmem_show, physmem_store, 0o600, per_open=True),
    Attr("regset", vtd_controls.regset_show, vtd_controls.regset_store, 0o600),
    Attr("faults", fault_control.faults_show, faults_store, 0o644, size=0),   # misbehaviour on cue (model/faults.py)
    Attr("atc_stats", ats.stats, size=0),      # per ATS device: its ATC's hits, misses, invalidations
    Attr("dma_stats", dma_stats.show, size=0),  # per function: DMA requests, bytes, faults, IOTLB hits, misses
    Attr("hotplug", hotplug_slot.show, hotplug_slot.command, 0o644, size=0),   # add/remove a card (pci/hotplug_slot.py)
)
RESET = Attr("reset", None, controls.reset, 0o200)     # acts on the host: it replaces the Machine


def scenario_show(host) -> str:
    return host.scenario.status() if host.scenario is not None else "state: idle\n"


def scenario_store(host, text: str) -> None:
    if host.scenario is None:
        controls.reject(host.machine, "scenario", "no engine runs this machine", errno.ENODEV)
    host.scenario.command(text)


SCENARIO = Attr("scenario", scenario_show, scenario_store, 0o644)   # `<path>` starts a timeline, `stop`


def requests_show(host) -> str:
    return "".join(f"{op} {n}\n" for op, n in host.requests.items())


REQUESTS = Attr("requests", requests_show, size=0)   # FUSE requests served per opcode (read only)


def vfakefs_entries(v) -> dict:
    return {**{a.name: a.bind(v.m) for a in CONTROLS}, RESET.name: RESET.bind(v.host),
            SCENARIO.name: SCENARIO.bind(v.host), REQUESTS.name: REQUESTS.bind(v.host)}
