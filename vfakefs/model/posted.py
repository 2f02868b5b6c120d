"""vfakefs's `posted` control (MNT/sys/kernel/debug/vfakefs/posted): post a device's
vector to a vCPU, as KVM does through irq_set_vcpu_affinity() ->
intel_ir_set_vcpu_affinity() (drivers/iommu/intel/irq_remapping.c), or give it back.

    <bdf> vector <n> pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]
    <bdf> vector <n> remapped

The first makes vector n's IRTE posted (IM=1): the guest vector, the posted-interrupt
descriptor's address (PDA, 64-byte aligned, in host memory) and the urgent bit, with
the entry's source-id check kept. The descriptor (VT-d 9.11) is initialised there:
NV = KVM's notification vector 0xf2, NDST = the CPU the vCPU runs on (ndst, default 0);
PIR and ON are what memory holds. A later delivery sets the PIR bit and ON and, when
ON was clear, sends NV to NDST (counted on the `PIN` line of `interrupts`). The second
restores the remapped entry the host programmed. Reading lists the posted vectors.
Needs interrupt remapping and CAP.PI on the unit."""
from __future__ import annotations

from vfakefs.model.controls import _device, _int, reject

USAGE = "expected '<bdf> vector <n> pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]' or '<bdf> vector <n> remapped'"
MAX_VECTOR = 2047


def posted_command(m, text: str) -> None:
    words = text.split()
    if len(words) < 4 or words[1] != "vector":
        reject(m, "posted", USAGE)
    dev = _device(m, "posted", words[0])
    n = _int(m, "posted", words[2], "vector", 0, MAX_VECTOR)
    t = m.irq_remap
    if t is None or not t.enabled:
        reject(m, "posted", "interrupt remapping is not enabled")
    indices = t.indices(dev)
    if n >= len(indices):
        reject(m, "posted", f"vector {n} is not allocated: {dev.name} has {len(indices)} vectors")
    index = indices[n]
    if words[3:] == ["remapped"]:
        if not t[index].im:
            reject(m, "posted", f"vector {n} of {dev.name} is not posted")
        t.clear_posted(index)
        return
    args = _args(m, words[3:])
    if not t.pi_supported:
        reject(m, "posted", f"{t.name} has no posted-interrupt support (CAP.PI clear)")
    pda = _int(m, "posted", args["pda"], "pda", 0, 2**64 - 1)
    if pda & 0x3F:
        reject(m, "posted", f"pda {pda:#x} is not 64-byte aligned")
    vv = _int(m, "posted", args["vcpu_vector"], "vcpu_vector", 0, 0xFF)
    ndst = _int(m, "posted", args.get("ndst", "0"), "ndst", 0, m.nr_cpus - 1)
    t.set_posted(index, pda, vv, ndst=ndst, urgent="urgent" in args)


def _args(m, words: list[str]) -> dict:
    out = {}
    for w in words:
        key, eq, value = w.partition("=")
        if (key, eq) == ("urgent", ""):
            value = ""
        elif key not in ("pda", "vcpu_vector", "ndst") or not eq:
            reject(m, "posted", f"unknown argument {w!r}: {USAGE}")
        if key in out:
            reject(m, "posted", f"{key} given twice")
        out[key] = value
    for key in ("pda", "vcpu_vector"):
        if key not in out:
            reject(m, "posted", f"{key}= is missing: {USAGE}")
    return out


def posted_show(m) -> str:
    """One line per posted vector: the IRTE's fields and the descriptor as memory holds it."""
    t = m.irq_remap if m.irq_remap_args is not None else None
    if t is None:
        return ""
    owner = {i: (f, n) for f in m.functions for n, i in enumerate(t.indices(f))}
    out = []
    for index in t.posted_indices():
        e = t[index]
        desc = t.descriptor(e.pda)
        f, n = owner.get(index, (None, 0))
        who = f"{f.name} vector {n}" if f is not None else "-"
        pir = ",".join(f"{v:#x}" for v in range(256) if desc.pir >> v & 1) or "-"
        out.append(f"{who} irte {index:#x} pda={e.pda:#x} vcpu_vector={e.vector:#x} urgent={int(e.urg)} "
                   f"ndst={desc.ndst} nv={desc.nv:#x} on={int(desc.on)} sn={int(desc.sn)} pir={pir}\n")
    return "".join(out)
