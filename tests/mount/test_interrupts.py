"""Interrupts on the seed machine through real mounts: the vectors seed-vtd's drivers take
at probe (msi_irqs/, lspci -vv, ir_translation_struct, vfakefs's `interrupts`), the
essay's source-id case with the `msi` control, unbind/rebind, a device on vfio-pci, and
the `posted` control (good and bad input) on a seed-vtd whose unit has CAP.PI."""
from __future__ import annotations

import errno
import os
import re

import pytest

from tests.conftest import sh
from tests.mount.test_vfio_programs import progs  # noqa: F401 (the fixture)
from tests.mount.test_controls import ask, dmar_table_errors, ir_entries, remappable_msi

VF = "sys/kernel/debug/vfakefs"
INTEL = "sys/kernel/debug/iommu/intel"
SID_FAIL = "Blocked an interrupt request due to source-id verification failure"
# seed-vtd at 2 CPUs: (bdf, kind, irq numbers, request_irq names)
SEED_VECTORS = [
    ("0000:01:00.0", "msi", [126], ["nvkm"]),
    ("0000:02:00.0", "msix", list(range(127, 132)), ["eth2", "eth2-rx-0", "eth2-rx-1", "eth2-tx-0", "eth2-tx-1"]),
    ("0000:03:00.0", "msix", [132, 133, 134], ["eth0-TxRx-0", "eth0-TxRx-1", "eth0"]),
    ("0000:03:00.1", "msix", [135, 136, 137], ["eth1-TxRx-0", "eth1-TxRx-1", "eth1"]),
    ("0000:06:00.0", "msix", [138, 139, 140], ["nvme0q0", "nvme0q1", "nvme0q2"]),
    ("0000:07:00.0", "msix", [141, 142, 143], ["nvme1q0", "nvme1q1", "nvme1q2"]),
    ("0000:0a:00.0", "msix", [144, 145, 146], ["nvme2q0", "nvme2q1", "nvme2q2"]),
    ("0000:0b:00.0", "msix", [147, 148, 149], ["nvme3q0", "nvme3q1", "nvme3q2"]),
]
LINE = re.compile(r"^ *(\d+):((?: +\d+){2}) +(IR-PCI-MSIX?-\S+) +(\d+)-edge +(\S*)$")


def interrupts(mnt) -> dict[int, tuple]:
    """vfakefs's interrupts file: irq -> (per-CPU counts, chip, hwirq, name)."""
    text = mnt.read(mnt.path / VF / "interrupts")
    lines = text.splitlines()
    assert lines[0] == " " * 11 + "CPU0       CPU1       "
    assert re.fullmatch(r"PIN:( +\d+){2}   Posted-interrupt notification event", lines[-1]), lines[-1]
    out = {}
    for line in lines[1:-1]:
        m = LINE.match(line)
        assert m, line
        out[int(m[1])] = (tuple(map(int, m[2].split())), m[3], int(m[4]), m[5])
    return out


def pin(mnt) -> tuple[int, ...]:
    last = mnt.read(mnt.path / VF / "interrupts").splitlines()[-1]
    return tuple(map(int, last.split()[1:3]))


def msi_irqs(mnt, bdf: str) -> dict[str, str] | None:
    d = mnt.devdir(bdf) / "msi_irqs"
    if not d.exists():
        return None
    return {name: (d / name).read_text() for name in os.listdir(d)}


def kmsg_lines(mnt) -> list[str]:
    """Every record of MNT/dev/kmsg so far (non-blocking reads), as `prio,seq,usec,-;text`."""
    fd = os.open(mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                out.append(os.read(fd, 8192).decode().split("\n")[0])
            except BlockingIOError:
                return out
    finally:
        os.close(fd)


# --- the vectors at probe -------------------------------------------------------------------------------
def test_seed_devices_have_the_vectors_their_drivers_take(seed_mnt):
    mnt = seed_mnt
    irqs = interrupts(mnt)
    for bdf, kind, numbers, names in SEED_VECTORS:
        assert msi_irqs(mnt, bdf) == {str(i): kind + "\n" for i in numbers}, bdf
        chip = ("IR-PCI-MSIX-" if kind == "msix" else "IR-PCI-MSI-") + bdf
        assert [irqs[i] for i in numbers] == [((0, 0), chip, n, name) for n, name in enumerate(names)]
        sid = bdf[5:]
        assert sum(1 for e in ir_entries(mnt) if e[1] == sid) == len(numbers), bdf
    assert sorted(irqs) == [i for _, _, numbers, _ in SEED_VECTORS for i in numbers]
    # the GTX 1080's HDA: snd_hda_intel's NVIDIA preset has AZX_DCAPS_NO_MSI, so INTx
    assert msi_irqs(mnt, "0000:01:00.1") is None
    assert mnt.read(mnt.devdir("0000:01:00.1") / "irq") == "17\n"
    # MSI replaces dev->irq; MSI-X does not
    assert mnt.read(mnt.devdir("0000:01:00.0") / "irq") == "126\n"
    assert mnt.read(mnt.devdir("0000:03:00.0") / "irq") == "16\n"


def test_lspci_shows_the_capabilities_enabled(seed_mnt):
    r = seed_mnt.lspci("-vv", "-s", "03:00.0")
    assert "MSI-X: Enable+ Count=64 Masked-" in r.stdout, r.stdout
    r = seed_mnt.lspci("-vv", "-s", "01:00.0")
    gpu = re.search(r"MSI: Enable\+ Count=1/1 Maskable\+ 64bit\+\n\s+Address: ([0-9a-f]+)  Data: ([0-9a-f]+)",
                    r.stdout)
    assert gpu, r.stdout
    (index,) = [e[0] for e in ir_entries(seed_mnt) if e[1] == "01:00.0"]
    assert (int(gpu[1], 16), int(gpu[2], 16)) == remappable_msi(index)
    assert "Interrupt: pin A routed to IRQ 126" in r.stdout
    r = seed_mnt.lspci("-vv", "-s", "01:00.1")
    assert "MSI: Enable- Count=1/1" in r.stdout and "routed to IRQ 17" in r.stdout


# --- the essay's case ----------------------------------------------------------------------------------
def test_own_vector_delivered_the_other_ports_message_blocked(mount_preset):
    mnt = mount_preset("seed-vtd")
    before = interrupts(mnt)
    (own,) = ask(mnt, "msi", "0000:03:00.0 vector 0")
    index0 = [e for e in ir_entries(mnt) if e[1] == "03:00.0"][0]
    assert own == f"0000:03:00.0: index {index0[0]:#x}: delivered vector {index0[3]:#04x} to cpu 1"
    after = interrupts(mnt)
    assert after[132][0] == (0, 1) and after[132][1:] == before[132][1:]   # x2APIC cluster dest 2: CPU 1
    # 03:00.1's vector 0 message, sent by 03:00.0
    index1 = [e for e in ir_entries(mnt) if e[1] == "03:00.1"][0][0]
    address, data = remappable_msi(index1)
    (stolen,) = ask(mnt, "msi", f"0000:03:00.0 {address:#x} {data}")
    assert stolen == f"0000:03:00.0: index {index1:#x}: blocked: [fault reason 0x26] {SID_FAIL}"
    line = f"DMAR: [INTR-REMAP] Request device [03:00.0] fault index {index1:#x} [fault reason 0x26] {SID_FAIL}"
    log = kmsg_lines(mnt)
    assert any(x.endswith(";DMAR: DRHD: handling fault status reg 2") for x in log)
    assert any(x.endswith(";" + line) for x in log), log[-5:]
    assert dmar_table_errors(mnt)[-1] == line.removeprefix("DMAR: ")
    assert interrupts(mnt) == after                                    # 03:00.1's irqs counted nothing
    # and 03:00.1 sending its own message is delivered
    (ok,) = ask(mnt, "msi", f"0000:03:00.1 {address:#x} {data}")
    assert ok.startswith(f"0000:03:00.1: index {index1:#x}: delivered vector")


# --- unbind, rebind, vfio-pci ----------------------------------------------------------------------------
def test_unbind_frees_the_vectors_and_rebind_takes_them_again(mount_preset):
    mnt = mount_preset("seed-vtd")
    bdf = "0000:03:00.1"
    table = [e for e in ir_entries(mnt) if e[1] == "03:00.1"]
    assert sh(f"echo {bdf} > {mnt.path}/sys/bus/pci/drivers/ixgbe/unbind").returncode == 0
    assert msi_irqs(mnt, bdf) is None
    assert [e for e in ir_entries(mnt) if e[1] == "03:00.1"] == []
    assert not set(interrupts(mnt)) & {135, 136, 137}
    assert "MSI-X: Enable- Count=64 Masked-" in mnt.lspci("-vv", "-s", "03:00.1").stdout
    r = sh(f"exec 3<>{mnt.path / VF / 'msi'}; echo '{bdf} vector 0' >&3")
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert sh(f"echo {bdf} > {mnt.path}/sys/bus/pci/drivers/ixgbe/bind").returncode == 0
    assert msi_irqs(mnt, bdf) == {"135": "msix\n", "136": "msix\n", "137": "msix\n"}   # the lowest free again
    again = [e for e in ir_entries(mnt) if e[1] == "03:00.1"]
    assert [e[0] for e in again] == [e[0] for e in table]
    assert [interrupts(mnt)[i][3] for i in (135, 136, 137)] == ["eth1-TxRx-0", "eth1-TxRx-1", "eth1"]
    (own,) = ask(mnt, "msi", f"{bdf} vector 2")
    assert own.startswith(f"{bdf}: index {again[2][0]:#x}: delivered vector")


def test_device_on_vfio_pci_has_no_vectors_until_the_program_enables_them(mount_preset):
    mnt = mount_preset("seed-vtd")
    bdf = "0000:03:00.1"
    d = f"{mnt.path}/sys/bus/pci"
    r = sh(f"echo {bdf} > {d}/drivers/ixgbe/unbind && echo vfio-pci > {d}/devices/{bdf}/driver_override"
           f" && echo {bdf} > {d}/drivers_probe")
    assert r.returncode == 0, r.stderr
    assert os.path.basename(os.readlink(mnt.devdir(bdf) / "driver")) == "vfio-pci"
    assert msi_irqs(mnt, bdf) is None and [e for e in ir_entries(mnt) if e[1] == "03:00.1"] == []
    assert "MSI-X: Enable- " in mnt.lspci("-vv", "-s", "03:00.1").stdout
    # the port's other function keeps its own
    assert len([e for e in ir_entries(mnt) if e[1] == "03:00.0"]) == 3


# --- posted interrupts -------------------------------------------------------------------------------------
@pytest.fixture
def pi_mnt(mount_preset, tmp_path):
    """seed-vtd with a unit that has posted interrupts (CAP.PI, bit 59)."""
    from vfakefs import presets
    src = open(os.path.join(os.path.dirname(presets.__file__), "seed-vtd.toml")).read()
    text = src.replace('x2apic = true\n', 'x2apic = true\ncap = 0x8d2078c406f0462\n', 1)
    assert text != src
    path = tmp_path / "seed-pi.toml"
    path.write_text(text)
    return mount_preset(str(path))


def posted_rows(mnt) -> list[str]:
    text = mnt.read(mnt.path / INTEL / "ir_translation_struct")
    return text.split("****\n\n")[1].splitlines()


def test_posting_a_vector_sets_pir_and_on_and_notifies(pi_mnt):
    mnt, bdf = pi_mnt, "0000:03:00.0"
    index = [e for e in ir_entries(mnt) if e[1] == "03:00.0"][0][0]
    assert posted_rows(mnt)[:3] == ["Posted Interrupt supported on IOMMU: dmar0", " IR table address:200000",
                                    " Entry SrcID   PDA_high PDA_low  Vct IRTE_high\t\tIRTE_low"]
    assert posted_rows(mnt)[3:] == [""]
    posted = mnt.path / VF / "posted"
    assert sh(f"echo '{bdf} vector 0 pda=0x1234567c0 vcpu_vector=0x31 ndst=1 urgent' > {posted}").returncode == 0
    rows = posted_rows(mnt)
    assert re.fullmatch(rf" {index:<5d} 03:00\.0 00000001 234567c0 31  0000000100040300\t([0-9a-f]{{16}})", rows[3])
    low = int(rows[3].split("\t")[1], 16)
    assert low >> 15 & 1 and low >> 14 & 1 and low & 1 and low >> 38 << 6 == 0x234567c0   # IM, URG, P, PDA low
    assert f" {index:<5d} 03:00.0" not in mnt.read(mnt.path / INTEL / "ir_translation_struct").split("****")[0]
    assert mnt.read(posted) == (f"{bdf} vector 0 irte {index:#x} pda=0x1234567c0 vcpu_vector=0x31 urgent=1 "
                                "ndst=1 nv=0xf2 on=0 sn=0 pir=-\n")
    counts = interrupts(mnt)[132][0]
    a, b = ask(mnt, "msi", f"{bdf} vector 0", f"{bdf} vector 0")
    assert a == b == f"{bdf}: index {index:#x}: posted vector 0x31 to cpu 1"
    # PIR bit 0x31 and ON in the descriptor; one notification (the second found ON set)
    assert mnt.read(posted).endswith("ndst=1 nv=0xf2 on=1 sn=0 pir=0x31\n")
    assert pin(mnt) == (0, 1)
    assert interrupts(mnt)[132][0] == counts                            # the host's irq never ran
    # back to remapped: the host's entry again
    assert sh(f"echo '{bdf} vector 0 remapped' > {posted}").returncode == 0
    assert posted_rows(mnt)[3:] == [""] and mnt.read(posted) == ""
    (c,) = ask(mnt, "msi", f"{bdf} vector 0")
    assert re.fullmatch(rf"{bdf}: index {index:#x}: delivered vector 0x[0-9a-f]{{2}} to cpu \d", c), c
    assert interrupts(mnt)[132][0] != counts


BAD_POSTED = [
    ("garbage", "expected '<bdf> vector <n> pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]' or "
                "'<bdf> vector <n> remapped'"),
    ("0000:03:00.0 vector 0", "expected '<bdf> vector <n> pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]' or "
                              "'<bdf> vector <n> remapped'"),
    ("0000:99:00.0 vector 0 remapped", "no device 0000:99:00.0"),
    ("0000:03:00.0 vector 3 pda=0x1000 vcpu_vector=0x31", "vector 3 is not allocated: 0000:03:00.0 has 3 vectors"),
    ("0000:01:00.1 vector 0 remapped", "vector 0 is not allocated: 0000:01:00.1 has 0 vectors"),
    ("0000:03:00.0 vector 0 remapped", "vector 0 of 0000:03:00.0 is not posted"),
    ("0000:03:00.0 vector 0 pda=0x1010 vcpu_vector=0x31", "pda 0x1010 is not 64-byte aligned"),
    ("0000:03:00.0 vector 0 pda=zz vcpu_vector=0x31", "pda 'zz' is not a number"),
    ("0000:03:00.0 vector 0 pda=0x1000 vcpu_vector=256", "vcpu_vector 256 is outside 0..255"),
    ("0000:03:00.0 vector 0 pda=0x1000 vcpu_vector=1 ndst=2", "ndst 2 is outside 0..1"),
    ("0000:03:00.0 vector 0 pda=0x1000", "vcpu_vector= is missing: expected '<bdf> vector <n> pda=<addr> "
                                         "vcpu_vector=<v> [ndst=<cpu>] [urgent]' or '<bdf> vector <n> remapped'"),
    ("0000:03:00.0 vector 0 pda=0x1000 pda=0x2000 vcpu_vector=1", "pda given twice"),
    ("0000:03:00.0 vector 0 pda=0x1000 vcpu_vector=1 fast", "unknown argument 'fast': expected '<bdf> vector <n> "
                                                             "pda=<addr> vcpu_vector=<v> [ndst=<cpu>] [urgent]' "
                                                             "or '<bdf> vector <n> remapped'"),
]


@pytest.mark.parametrize("text,why", BAD_POSTED)
def test_posted_bad_input_is_einval_logged_and_changes_nothing(pi_mnt, text, why):
    mnt = pi_mnt
    posted = mnt.path / VF / "posted"
    before = (mnt.read(mnt.path / INTEL / "ir_translation_struct"), mnt.read(posted))
    fd = os.open(posted, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, text.encode())
    finally:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert any(x.endswith(f";vfakefs: posted: {why}") for x in kmsg_lines(mnt))
    assert (mnt.read(mnt.path / INTEL / "ir_translation_struct"), mnt.read(posted)) == before


def test_posting_needs_cap_pi(mount_preset):
    """seed-vtd's unit (a client part) has no posted interrupts: EINVAL, nothing changes."""
    mnt = mount_preset("seed-vtd")
    posted = mnt.path / VF / "posted"
    before = mnt.read(mnt.path / INTEL / "ir_translation_struct")
    assert "Posted Interrupt supported" not in before
    r = sh(f"echo '0000:03:00.0 vector 0 pda=0x1000 vcpu_vector=0x31' > {posted}")
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert any(x.endswith(";vfakefs: posted: dmar0 has no posted-interrupt support (CAP.PI clear)")
               for x in kmsg_lines(mnt))
    assert mnt.read(mnt.path / INTEL / "ir_translation_struct") == before



def test_the_essay_programs_msi_shows_in_msi_irqs_and_interrupts(mount_preset, progs):
    """The essay's program on vfio-pci enables the GPU's MSI with SET_IRQS: msi_irqs/ has its
    irq (nouveau's, freed at unbind, is the lowest free again), `interrupts` names it
    vfio-msi[0](bdf) and counts the vector the `msi` control raises; exit takes it away."""
    from tests.mount.test_vfio_programs import GPU, bind_audio, bind_gpu, bus_master_on, control, program
    mnt = mount_preset("seed-vtd")
    bind_gpu(mnt)
    bind_audio(mnt)
    assert msi_irqs(mnt, GPU) is None and 126 not in interrupts(mnt)
    with program(mnt.path, progs / "essay") as p:
        p.until("ready")
        assert msi_irqs(mnt, GPU) == {"126": "msi\n"}
        assert interrupts(mnt)[126] == ((0, 0), f"IR-PCI-MSI-{GPU}", 0, f"vfio-msi[0]({GPU})")
        bus_master_on(mnt)
        answer = control(mnt, "msi", f"{GPU} vector 0")
        cpu = int(re.search(r"to cpu (\d)", answer)[1])
        assert interrupts(mnt)[126][0][cpu] == 1
        p.send()
        p.finish()
    assert msi_irqs(mnt, GPU) is None and 126 not in interrupts(mnt)


def test_interface_down_frees_its_irqs_and_up_requests_them(mount_preset):
    """ixgbe requests its irqs in ndo_open and frees them in ndo_stop: with eth1 down its
    irqs have no name (not listed) and their IRTEs are parked on the shutdown vector 0xef."""
    mnt = mount_preset("seed-vtd")
    flags = mnt.path / "sys/class/net/eth1/flags"
    assert mnt.read(flags) == "0x1003\n"
    assert sh(f"echo 0x1002 > {flags}").returncode == 0
    assert not set(interrupts(mnt)) & {135, 136, 137}
    assert [e[3] for e in ir_entries(mnt) if e[1] == "03:00.1"] == [0xEF] * 3
    assert msi_irqs(mnt, "0000:03:00.1") == {"135": "msix\n", "136": "msix\n", "137": "msix\n"}   # still allocated
    assert sh(f"echo 0x1003 > {flags}").returncode == 0
    assert [interrupts(mnt)[i][3] for i in (135, 136, 137)] == ["eth1-TxRx-0", "eth1-TxRx-1", "eth1"]
    assert 0xEF not in [e[3] for e in ir_entries(mnt) if e[1] == "03:00.1"]
