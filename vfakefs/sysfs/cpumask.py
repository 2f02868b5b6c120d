"""The kernel's two ways of printing a CPU set (lib/vsprintf.c bitmap_string() and
bitmap_list_string(), through cpumap_print_to_pagebuf()), each followed by a newline.

- "%*pb": nr_cpu_ids bits as comma-separated 32-bit hex words, most significant first;
  the first word only as many hex digits as its bits need (zero-padded), so 2 CPUs
  print "3", 16 print "00ff", 40 print "00,000000ff".
- "%*pbl": ranges, "0-3,8-11"; an empty set prints nothing (just the newline)."""
from __future__ import annotations

# cpumask.h: CPUMAP_FILE_MAX_BYTES and CPULIST_FILE_MAX_BYTES for Debian's NR_CPUS=8192:
# the size stat shows for the binary topology/ and node cpumap/cpulist attributes
NR_CPUS = 8192
CPUMAP_FILE_MAX_BYTES = max(NR_CPUS * 9 // 32 - 1, 4096)
CPULIST_FILE_MAX_BYTES = max(NR_CPUS * 7 // 2, 4096)


def cpumap(cpus, nbits: int) -> str:
    value = 0
    for c in cpus:
        value |= 1 << c
    words = max(1, (nbits + 31) // 32)
    top_bits = nbits - 32 * (words - 1) if nbits else 32
    out = []
    for i in range(words - 1, -1, -1):
        w = value >> (32 * i) & 0xFFFFFFFF
        out.append("%0*x" % ((top_bits + 3) // 4 if i == words - 1 else 8, w))
    return ",".join(out) + "\n"


def cpulist(cpus) -> str:
    cpus = sorted(set(cpus))
    parts, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts) + "\n"
