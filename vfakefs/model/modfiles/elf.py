"""The simulated kernel's module files: each an ELF64 relocatable object (x86-64, little
endian) as small as libkmod accepts, holding what kmod reads of a real module:

- .modinfo: the module's "key=value" strings, NUL-separated, in the order the real
  toolchain leaves them (modinfo prints them in that order);
- __ksymtab_strings: the names of the symbols it exports (libkmod's fallback source of a
  module's exports when .symtab has no __crc_ symbols: modules built without modversions);
- .symtab/.strtab: an undefined global symbol for each symbol it uses from another module,
  which is how depmod finds a module's dependencies (kmod_elf_get_dependency_symbols);
- .shstrtab: the section names.

No code, no relocations, no signature: kmod_elf_new checks the identification, the
section header size and count and a NUL-terminated section name table, and modinfo shows
a module's signature fields only when one is appended.
"""
from __future__ import annotations

import struct

ET_REL, EM_X86_64 = 1, 62
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_ALLOC = 0x2
STB_GLOBAL, STT_NOTYPE = 1, 0
_EHDR, _SHDR, _SYM = 64, 64, 24


def _strtab(names: list[str]) -> tuple[bytes, dict[str, int]]:
    blob, offs = bytearray(b"\0"), {"": 0}
    for n in names:
        if n not in offs:
            offs[n] = len(blob)
            blob += n.encode() + b"\0"
    return bytes(blob), offs


def _align(buf: bytearray, n: int) -> None:
    buf += b"\0" * (-len(buf) % n)


def module_object(modinfo: list[tuple[str, str]], exports: list[str] = (), imports: list[str] = ()) -> bytes:
    """A .ko: modinfo as (key, value) pairs in section order; exports, imports: symbol names."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo)
    ksymtab = b"".join(s.encode() + b"\0" for s in exports)
    strtab, stroff = _strtab(list(imports))
    symtab = bytes(_SYM) + b"".join(
        struct.pack("<IBBHQQ", stroff[s], (STB_GLOBAL << 4) | STT_NOTYPE, 0, 0, 0, 0) for s in imports)

    # (name, type, flags, data, link, info, align, entsize); .symtab links to .strtab
    sections = [(".modinfo", SHT_PROGBITS, SHF_ALLOC, info, 0, 0, 8, 0)]
    if exports:
        sections.append(("__ksymtab_strings", SHT_PROGBITS, SHF_ALLOC, ksymtab, 0, 0, 1, 0))
    sym_idx = len(sections) + 1
    sections.append((".symtab", SHT_SYMTAB, 0, symtab, sym_idx + 1, 1, 8, _SYM))   # info: first global
    sections.append((".strtab", SHT_STRTAB, 0, strtab, 0, 0, 1, 0))
    shstr, shoff = _strtab([s[0] for s in sections] + [".shstrtab"])
    sections.append((".shstrtab", SHT_STRTAB, 0, shstr, 0, 0, 1, 0))

    out = bytearray(_EHDR)
    placed = []
    for name, typ, flags, data, link, sinfo, align, entsize in sections:
        _align(out, align)
        placed.append((shoff[name], typ, flags, len(out), len(data), link, sinfo, align, entsize))
        out += data
    _align(out, 8)
    e_shoff = len(out)
    out += bytes(_SHDR)   # section 0: SHN_UNDEF
    for name, typ, flags, off, size, link, sinfo, align, entsize in placed:
        out += struct.pack("<IIQQQQIIQQ", name, typ, flags, 0, off, size, link, sinfo, align, entsize)
    ident = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)   # ELFCLASS64, LSB, EV_CURRENT, SYSV
    out[:_EHDR] = ident + struct.pack("<HHIQQQIHHHHHH", ET_REL, EM_X86_64, 1, 0, 0, e_shoff, 0, _EHDR,
                                      0, 0, _SHDR, len(sections) + 1, len(sections))
    return bytes(out)


# --- reading -------------------------------------------------------------------------------------
def _sections(data: bytes) -> dict[str, bytes]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 object")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * shentsize) for i in range(shnum)]
    names = hdrs[shstrndx]
    table = data[names[4]:names[4] + names[5]]
    return {table[h[0]:table.index(b"\0", h[0])].decode(): data[h[4]:h[4] + h[5]] for h in hdrs[1:]}


def read_modinfo(data: bytes) -> list[tuple[str, str]]:
    """The (key, value) strings of a module file's .modinfo, in order (what the kernel's
    load_module reads its name= from)."""
    sec = _sections(data).get(".modinfo", b"")
    out = []
    for s in sec.split(b"\0"):
        if s:
            k, _, v = s.decode(errors="replace").partition("=")
            out.append((k, v))
    return out
