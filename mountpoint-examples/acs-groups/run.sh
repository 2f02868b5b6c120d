#!/usr/bin/env bash
# How ACS (Access Control Services) decides IOMMU groups: the same NVMe drives and
# dual-port NICs, with and without ACS on the way to the root (topology.toml).
exec 2>&1; set -v    # a transcript: each command, then what it printed

# The machine: a switch under 00:1d.0 (no ACS anywhere), a switch under 00:1d.4 (ACS on
# the root port and the downstream ports), and two X540s, only the second with ACS
lspci -tv

# Which group each function landed in, as the kernel logged it while probing
dmesg -t | grep 'Adding to iommu group'

# The groups: everything under 00:1d.0 is one group (the drives may talk to each other
# without the IOMMU seeing it); under 00:1d.4 each drive is alone
for g in $(ls /sys/kernel/iommu_groups | sort -n); do
    echo "group $g:" $(ls /sys/kernel/iommu_groups/$g/devices)
done

# What isolates them: the ACS capability, which the kernel enables at enumeration
# (source validation, request and completion redirect, upstream forwarding)
lspci -vvv -s 06:00.0 | grep -A2 'Access Control Services'
lspci -vvv -s 02:00.0 | grep -c 'Access Control Services'
lspci -vvv -s 0a:00.1 | grep -A2 'Access Control Services'

# Passing one drive of the shared group to a VM means taking the whole group: binding
# 03:00.0 to vfio-pci creates /dev/vfio/3, but 04:00.0 still has nvme, so the group
# is not viable; the isolated drive's group 11 is ready by itself
echo 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind
echo vfio-pci > /sys/bus/pci/devices/0000:03:00.0/driver_override
echo 0000:03:00.0 > /sys/bus/pci/drivers_probe
echo 0000:07:00.0 > /sys/bus/pci/devices/0000:07:00.0/driver/unbind
echo vfio-pci > /sys/bus/pci/devices/0000:07:00.0/driver_override
echo 0000:07:00.0 > /sys/bus/pci/drivers_probe
ls /dev/vfio
for d in /sys/kernel/iommu_groups/{3,11}/devices/*; do
    echo "$(basename $d): $(basename $(readlink $d/driver))"
done
