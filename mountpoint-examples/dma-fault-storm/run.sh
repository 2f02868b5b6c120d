#!/usr/bin/env bash
# A device that keeps DMAing where nothing is mapped: every request faults, the VT-d unit
# records each one, the kernel's fault handler logs them (ratelimited), and past a
# threshold the device loses bus mastering.
exec 2>&1; set -v    # a transcript: each command, then what it printed
C=/sys/kernel/debug/vfakefs

# vfakefs's policy (the essay's FAULT_THRESHOLD, not the kernel's): after this many DMA
# faults a device's Bus Master Enable is cleared. Lower it for the demonstration (0 is
# refused: EINVAL and a `vfakefs:` line in the log; nothing changes)
cat $C/fault_threshold
echo 15 > $C/fault_threshold
echo 0 > $C/fault_threshold

# 18 writes by the X540's first port (ixgbe, 03:00.0) to IOVAs its driver never mapped:
# 15 fault (reason 0x05: the PTE is not present, so not writable), then the device has
# lost bus mastering and the rest are never issued
exec 3<>$C/dma
for i in $(seq 1 18); do echo "0000:03:00.0 write $((i * 0x1000)) 8" >&3; cat <&3; done
lspci -vv -s 03:00.0 | grep 'Control:'

# The kernel's dmar_fault() prints at most 10 times in 5 seconds (DEFAULT_RATELIMIT_BURST):
# 10 of the 15 faults are in the log, all 15 were serviced and cleared
dmesg -t | grep -c 'DRHD: handling fault status'
dmesg -t | grep 'DMA Write' | tail -1
dmesg -t | grep 'reached the threshold'
wc -l < /sys/kernel/debug/iommu/intel/dmar_table_errors
grep FSTS /sys/kernel/debug/iommu/intel/iommu_regset

# A storm from the engine: the second port (03:00.1) sends a stream of faulting
# requests until it too loses bus mastering (the stream's counts depend on time: not shown)
echo "start 0000:03:00.1 rate=1000 pattern=storm" > $C/traffic
until dmesg -t | grep -q '03:00.1: DMAR: .* reached the threshold'; do sleep 0.1; done
dmesg -t | grep 'reached the threshold'
lspci -vv -s 03:00.1 | grep 'Control:'
echo "stop all" > $C/traffic
