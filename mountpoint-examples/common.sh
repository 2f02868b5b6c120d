# Helpers shared by the example scripts. Source it; it expects $MNT.
SYS=$MNT/sys
# lspci reading the mount (-A linux-sysfs: never fall back to the host's /proc/bus/pci)
lspci() { command lspci -A linux-sysfs -O sysfs.path="$SYS/bus/pci" "$@" 2>/dev/null; }
# run a command, printing "$ cmd" first; paths are shown as the real machine has them
show() { echo "\$ ${*//$MNT/}"; eval "$@" 2>&1 | sed "s|$MNT||g"; }
# write like `echo VALUE > FILE`; on failure print the kernel's answer as bash words it
write() {
    local out
    echo "\$ echo $1 > ${2#$MNT}"
    if ! out=$( { echo "$1" > "$2"; } 2>&1 ); then echo "error: ${out##*write error: }"; fi
}
