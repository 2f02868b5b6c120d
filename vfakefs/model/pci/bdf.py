"""Bdf: a PCI function's address, parsed once, printed the kernel's way."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_BDF = re.compile(r"^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


@dataclass(frozen=True, order=True, slots=True)
class Bdf:
    domain: int
    bus: int
    dev: int
    fn: int
    # its name, made once: thousands of VFs' names are printed many times each (kernel log,
    # uevents, sysfs paths); not an address field (no init, compare, hash or repr)
    _name: str = field(default="", init=False, repr=False, compare=False, hash=False)
    # its hash, made once: an address is a key of many dicts (by_bdf, the IRTE owners, the
    # hw table), looked up several times for each VF added
    _hash: int = field(default=0, init=False, repr=False, compare=False, hash=False)

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            h = hash((self.domain, self.bus, self.dev, self.fn))     # the dataclass's own hash
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def from_str(cls, text: str) -> Bdf:
        m = _BDF.match(text.strip())
        if not m:
            raise ValueError(f"malformed BDF {text!r} (expected DDDD:BB:DD.F)")
        dom, bus, dev = (int(g, 16) if g else 0 for g in m.groups()[:3])
        fn = int(m.group(4))
        if dev > 0x1F:
            raise ValueError(f"malformed BDF {text!r}: device number above 1f")
        return cls(dom, bus, dev, fn)

    @classmethod
    def from_rid(cls, domain: int, rid: int) -> Bdf:
        return cls(domain, (rid >> 8) & 0xFF, (rid >> 3) & 0x1F, rid & 7)

    @property
    def devfn(self) -> int:
        return self.dev << 3 | self.fn

    @property
    def rid(self) -> int:
        """Routing ID (requester ID): bus << 8 | devfn, as in the PCIe spec."""
        return self.bus << 8 | self.devfn

    def vf_rid(self, offset: int, stride: int, vf_id: int) -> int:
        """SR-IOV spec 3.3.10-11: VF n's RID = PF RID + First VF Offset + n * VF Stride.
        A sum past devfn 255 carries into the next bus number."""
        return self.rid + offset + stride * vf_id

    def short(self) -> str:
        """Form of the VT-d fault log and debugfs: bb:dd.f."""
        return f"{self.bus:02x}:{self.dev:02x}.{self.fn}"

    def __str__(self) -> str:
        name = self._name
        if not name:
            name = f"{self.domain:04x}:{self.bus:02x}:{self.dev:02x}.{self.fn}"
            object.__setattr__(self, "_name", name)
        return name
