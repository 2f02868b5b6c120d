"""/proc/cpuinfo as x86 prints it (arch/x86/kernel/cpu/proc.c show_cpuinfo()), one block
per online CPU, from the Machine's locality: identity from the topology's `[cpu]`,
"physical id", "siblings", "core id", "cpu cores" and the APIC ids from where each CPU
sits, "cache size" the last-level cache (an AMD part: its L2, as cpuid 0x80000006 gives
x86_cache_size), bogomips from the TSC rate as a HZ=250 kernel computes loops_per_jiffy."""
from __future__ import annotations

HZ = 250            # Debian's CONFIG_HZ


def _cache_size_kb(loc) -> int:
    if not loc.caches:
        return 0
    if loc.model.vendor == "AuthenticAMD":
        l2 = [c for c in loc.caches if c.level == 2]
        return l2[0].size >> 10 if l2 else 0
    return max(loc.caches, key=lambda c: c.level).size >> 10


def cpu_block(loc, cpu: int) -> str:
    c, model = loc.cpus[cpu], loc.model
    khz = round(model.mhz * 1000)
    lpj = khz * 1000 // HZ
    out = [f"processor\t: {cpu}\n", f"vendor_id\t: {model.vendor}\n", f"cpu family\t: {model.family}\n",
           f"model\t\t: {model.model}\n", f"model name\t: {model.model_name}\n", f"stepping\t: {model.stepping}\n"]
    if model.microcode:
        out.append(f"microcode\t: {model.microcode:#x}\n")
    out.append("cpu MHz\t\t: %u.%03u\n" % (khz // 1000, khz % 1000))
    size = _cache_size_kb(loc)
    if size:
        out.append(f"cache size\t: {size} KB\n")
    out += [f"physical id\t: {c.package}\n", f"siblings\t: {len(loc.package_cpus(cpu))}\n",
            f"core id\t\t: {c.core}\n", f"cpu cores\t: {loc.cores}\n", f"apicid\t\t: {c.apicid}\n",
            f"initial apicid\t: {c.apicid}\n", "fpu\t\t: yes\n", "fpu_exception\t: yes\n",
            f"cpuid level\t: {model.cpuid_level}\n", "wp\t\t: yes\n",
            "flags\t\t:" + "".join(" " + f for f in model.flags) + "\n",
            "bugs\t\t:" + "".join(" " + b for b in model.bugs) + "\n",
            "bogomips\t: %u.%02u\n" % (lpj // (500000 // HZ), lpj // (5000 // HZ) % 100),
            "clflush size\t: 64\n", "cache_alignment\t: 64\n",
            "address sizes\t: %u bits physical, %u bits virtual\n" % model.address_sizes,
            "power management:\n\n"]
    return "".join(out)


def cpuinfo_show(m) -> str:
    loc = m.locality
    return "".join(cpu_block(loc, c) for c in range(loc.nr_cpus))
