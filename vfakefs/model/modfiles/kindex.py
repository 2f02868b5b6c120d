"""libkmod's binary index (modules.dep.bin, modules.alias.bin, modules.symbols.bin,
modules.builtin.bin, modules.builtin.alias.bin): what depmod writes and libkmod mmaps for
every lookup (libkmod reads only these, never the text files beside them).

The format (kmod's libkmod-index.c and depmod's index writer, module-init-tools' index.c
before them): big-endian u32s throughout. A 12-byte header: magic 0xB007F457, version
0x00020001 (major 2, minor 1), and the root node's offset. A node is a radix-trie node:
its label's remaining characters (the "prefix", NUL-terminated) when not empty; when it has
children, the first and last child character and one u32 offset per character in between
(0 where there is no child); when it holds values, their count and each value's u32
priority and NUL-terminated text. A node's offset word carries in its high nibble which of
the three parts are present (0x80000000 prefix, 0x20000000 children, 0x40000000 values).
depmod writes nodes in post-order (children before their parent), so the root comes last.

The trie is the one depmod's insertion builds: a node splits where a new key leaves its
label, and a node's values are kept ordered by priority, a new value going before the
values of equal priority already there. Given the same keys, values and priorities in the
same order, the bytes are depmod's.
"""
from __future__ import annotations

import struct
from typing import Iterable

MAGIC = 0xB007F457
VERSION = 0x00020001
F_PREFIX, F_VALUES, F_CHILDS = 0x80000000, 0x40000000, 0x20000000


class _Node:
    __slots__ = ("prefix", "children", "values")

    def __init__(self, prefix: str = "", values: list | None = None):
        self.prefix = prefix
        self.children: dict[str, _Node] = {}
        self.values: list[tuple[int, str]] = values if values is not None else []


def _add_value(values: list[tuple[int, str]], value: str, priority: int) -> None:
    # before the first value whose priority is not lower (depmod's index_add_value)
    at = next((k for k, (p, _) in enumerate(values) if p >= priority), len(values))
    values.insert(at, (priority, value))


def _check(s: str) -> None:
    if any(ord(c) >= 128 for c in s):   # depmod refuses anything but 7-bit ASCII
        raise ValueError(f"module index: only 7-bit ASCII is supported: {s!r}")


def _insert(root: _Node, key: str, value: str, priority: int) -> None:
    _check(key)
    _check(value)
    node, i = root, 0
    while True:
        p = node.prefix
        j = 0
        while j < len(p) and i + j < len(key) and p[j] == key[i + j]:
            j += 1
        if j < len(p):   # the key leaves this node's label: split it at j
            child = _Node(p[j + 1:], node.values)
            child.children = node.children
            node.prefix, node.children, node.values = p[:j], {p[j]: child}, []
        i += j
        if i == len(key):
            _add_value(node.values, value, priority)
            return
        ch = key[i]
        nxt = node.children.get(ch)
        if nxt is None:
            node.children[ch] = _Node(key[i + 1:], [(priority, value)])
            return
        node, i = nxt, i + 1


def _write(node: _Node, out: bytearray) -> int:
    offs = []
    if node.children:
        first, last = min(map(ord, node.children)), max(map(ord, node.children))
        for c in range(first, last + 1):
            child = node.children.get(chr(c))
            offs.append(_write(child, out) if child is not None else 0)
    off = len(out)
    if node.prefix:
        out += node.prefix.encode("ascii") + b"\0"
        off |= F_PREFIX
    if node.children:
        out += bytes((first, last)) + struct.pack(f">{len(offs)}I", *offs)
        off |= F_CHILDS
    if node.values:
        out += struct.pack(">I", len(node.values))
        for prio, value in node.values:
            out += struct.pack(">I", prio) + value.encode("ascii") + b"\0"
        off |= F_VALUES
    return off


def index_bytes(entries: Iterable[tuple[str, str, int]]) -> bytes:
    """The index file of (key, value, priority) entries, inserted in the order given."""
    root = _Node()
    for key, value, priority in entries:
        _insert(root, key, value, priority)
    out = bytearray(struct.pack(">III", MAGIC, VERSION, 0))
    struct.pack_into(">I", out, 8, _write(root, out))
    return bytes(out)


# --- reading (for tests and for whoever needs a lookup without libkmod) -----------------------
def _read_node(data: bytes, off: int) -> tuple[str, dict[str, int], list[tuple[int, str]]]:
    pos = off & 0x0FFFFFFF
    prefix, children, values = "", {}, []
    if off & F_PREFIX:
        end = data.index(b"\0", pos)
        prefix, pos = data[pos:end].decode("ascii"), end + 1
    if off & F_CHILDS:
        first, last = data[pos], data[pos + 1]
        pos += 2
        for k, c in enumerate(range(first, last + 1)):
            (child,) = struct.unpack_from(">I", data, pos + 4 * k)
            if child:
                children[chr(c)] = child
        pos += 4 * (last - first + 1)
    if off & F_VALUES:
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        for _ in range(n):
            (prio,) = struct.unpack_from(">I", data, pos)
            end = data.index(b"\0", pos + 4)
            values.append((prio, data[pos + 4:end].decode("ascii")))
            pos = end + 1
    return prefix, children, values


def index_entries(data: bytes) -> dict[str, list[tuple[int, str]]]:
    """Every key of an index file with its (priority, value)s, in the file's order."""
    magic, version, root = struct.unpack_from(">III", data, 0)
    if magic != MAGIC or version >> 16 != VERSION >> 16:
        raise ValueError("not a libkmod index")
    out: dict[str, list[tuple[int, str]]] = {}

    def walk(off: int, key: str) -> None:
        prefix, children, values = _read_node(data, off)
        key += prefix
        if values:
            out[key] = values
        for c, child in children.items():
            walk(child, key + c)
    walk(root, "")
    return out
