#!/usr/bin/env bash
# SR-IOV on the X540's first port (eth0, 0000:03:00.0), as the essay does it.
exec 2>&1; set -v    # a transcript: each command, then what it printed
PF=/sys/class/net/eth0/device

# How many VFs can the port make?
cat $PF/sriov_totalvfs $PF/sriov_offset $PF/sriov_stride

# Make four: they appear as PCI functions at routing id PF + offset + stride * n
echo 4 > $PF/sriov_numvfs
lspci -nn | grep 'Virtual Function'
for vf in $PF/virtfn*; do
    echo "$(basename $vf) -> $(basename $(readlink $vf)): group $(basename $(readlink $vf/iommu_group)), driver $(basename $(readlink $vf/driver))"
done
readlink /sys/bus/pci/devices/0000:03:10.0/physfn
ls /sys/class/net

# The kernel logs what it did
dmesg -t | grep 0000:03:10.0

# Changing a non-zero count needs a 0 first; bad numbers are refused; nothing changes
echo 8 > $PF/sriov_numvfs
echo 64 > $PF/sriov_numvfs
echo abc > $PF/sriov_numvfs
cat $PF/sriov_numvfs
echo 0 > $PF/sriov_numvfs
echo 8 > $PF/sriov_numvfs
lspci | grep -c 'Virtual Function'

# 0 removes every VF, its IOMMU group and its netdev
echo 0 > $PF/sriov_numvfs
lspci | grep -c 'Virtual Function'
ls /sys/kernel/iommu_groups | sort -n | tail -3
ls /sys/class/net
dmesg -t | tail -2
