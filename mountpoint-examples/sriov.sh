#!/usr/bin/env bash
# The essay's SR-IOV steps against a vfakefs mount of seed-vtd:
#   bash mountpoint-examples/sriov.sh MNT
# Expected output: sriov.expected (tests/mount/test_examples.py runs it).
set -u
MNT=$(realpath "${1:-${MNT:-./mnt}}")
. "$(dirname "$0")/common.sh"
PF=$SYS/class/net/eth0/device

echo "# 1. how many VFs can the port make?"
show "cat $PF/sriov_totalvfs"

echo "# 2. make four; they appear as PCI functions with routing ids PF + 128 + 2n"
write 4 "$PF/sriov_numvfs"
show "lspci | grep Virtual"
echo "\$ for each VF: its group and driver"
for vf in "$PF"/virtfn*; do
    echo "$(basename "$vf") -> $(basename "$(readlink "$vf")") group $(basename "$(readlink "$vf/iommu_group")") driver $(basename "$(readlink "$vf/driver")")"
done

echo "# 3. changing a non-zero count needs a 0 first"
write 8 "$PF/sriov_numvfs"
write 64 "$PF/sriov_numvfs"
write abc "$PF/sriov_numvfs"
show "cat $PF/sriov_numvfs"
write 0 "$PF/sriov_numvfs"
write 8 "$PF/sriov_numvfs"
show "cat $PF/sriov_numvfs"
show "lspci | grep -c Virtual"

echo "# 4. 0 removes every VF, its group and its netdev"
write 0 "$PF/sriov_numvfs"
show "lspci | grep -c Virtual"
show "ls $SYS/class/net"
