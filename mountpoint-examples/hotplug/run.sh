#!/usr/bin/env bash
# Plug a NIC into a free hot-plug slot, use it, pull it out (vfakefs's `hotplug` control).
exec 2>&1; set -v    # a transcript: each command, then what it printed
HP=/sys/kernel/debug/vfakefs/hotplug

# Two free slots (pciehp): 6 below a root port with ACS, 7 below one without
cat $HP
cat /sys/bus/pci/slots/6/address /sys/bus/pci/slots/6/adapter
lspci -tv
ls /sys/kernel/iommu_groups

# Plug the card (a TOML file of [[device]] tables) into slot 6
echo "add 6 $PWD/nic.toml" > $HP
cat $HP
lspci -tv
lspci -nn -s 03:
ls /sys/kernel/iommu_groups
for f in /sys/bus/pci/devices/0000:03:*; do
    echo "$(basename $f): group $(basename $(readlink $f/iommu_group)), driver $(basename $(readlink $f/driver)), net $(ls $f/net)"
done
cat /sys/bus/pci/slots/6/adapter

# Its VFs, as on any X540
echo 2 > /sys/bus/pci/devices/0000:03:00.0/sriov_numvfs
lspci -s 03:10

# A second card into the same slot, or a slot that does not exist: refused
echo "add 6 $PWD/nic.toml" > $HP
echo "add 9 $PWD/nic.toml" > $HP

# Pulled out without warning: functions, VFs, groups and netdevs go
echo "remove 6" > $HP
cat $HP
lspci -tv
ls /sys/kernel/iommu_groups /sys/class/net

# What the kernel said, from the plug on
dmesg -t | sed -n '/Slot(6): Card present/,$p'
