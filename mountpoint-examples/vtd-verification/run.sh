#!/usr/bin/env bash
# Is VT-d on and doing its job? What a user checks, on the QEMU q35 machine of the
# reference capture (qemu-ref: kernel 6.1, QEMU's intel-iommu).
exec 2>&1; set -v    # a transcript: each command, then what it printed

# 1. The kernel was asked for it, found the DMAR table and enabled remapping
cat /proc/cmdline
dmesg -t | grep -e DMAR -e IOMMU

# 2. The remapping unit is registered; every PCI function sits behind it, in IOMMU groups
ls /sys/class/iommu
(cd /sys/class/iommu/dmar0/intel-iommu && grep . version cap ecap)
ls /sys/class/iommu/dmar0/devices | wc -l
for g in $(ls /sys/kernel/iommu_groups | sort -n); do
    echo "group $g:" $(ls /sys/kernel/iommu_groups/$g/devices)
done
cat /sys/kernel/iommu_groups/5/type /sys/kernel/iommu_groups/5/reserved_regions

# 3. The tables the hardware walks (debugfs): the root table, one context entry per
#    function (its domain id in bits 8-23 of the high qword, the page table in the low)
head -4 /sys/kernel/debug/iommu/intel/dmar_translation_struct
grep -e FSTS -e RTADDR /sys/kernel/debug/iommu/intel/iommu_regset

# 4. A DMA translated: the SATA controller (00:1f.2) reads in the ISA window its group
#    maps 1:1; the second read hits the IOTLB
exec 3<>/sys/kernel/debug/vfakefs/dma
echo "0000:00:1f.2 read 0x1000 8" >&3; cat <&3
echo "0000:00:1f.2 read 0x1000 8" >&3; cat <&3

# 5. A DMA faulting: the e1000e NIC (02:00.0) writes where nothing is mapped; the
#    unit records the fault and the kernel's fault handler logs it
echo "0000:02:00.0 write 0x7123 8" >&3; cat <&3
dmesg -t | tail -2
# (dmar_table_errors is vfakefs's own file beside the kernel's: the faults serviced)
cat /sys/kernel/debug/iommu/intel/dmar_table_errors
