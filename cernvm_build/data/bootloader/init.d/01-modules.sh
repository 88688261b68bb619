# 01-modules: the kernel modules the build resolved (dependencies first), in that order. A line is a
# module's path, then the device aliases that gate it (none: always loaded, e.g. the filesystems).
# A gated module (a driver) loads only when a present device's modalias matches: the OS loads the
# rest itself from its own module tree (90-boot.sh loads them here when the OS has none). A pass
# repeats while it loaded drivers, whose buses (virtio, vmbus) bring devices of their own.
# A line marked @late (the IDE/SATA/SCSI disk and CD-ROM stack, modules.py LATE) loads only when
# load_late_modules is called: by 03-context-drive and 04-devices when the other disks lacked what
# they look for. The pattern @late-pass (scsi_mod: virtio_scsi's device, or sd_mod) matches in that
# pass; it is a word of its own, so that a gate list beginning with it is never read as the mark.
MODDIR=/lib/modules/$(uname -r)
MODS_LOADED=" "
n=0
# The list is read once and split by the shell itself: busybox's read builtin takes a file a byte
# (a syscall) at a time, ~0.2 s a pass over this ~10 kB list under TCG.
MODS_LIST=$(cat "$MODULES_LIST")
NL='
'
# Each line of the list as the words of one call: $1 (a function) with the module, then its patterns.
# IFS is given back as it was (not unset: a later IFS=$saved would then make it empty).
each_module() {
    mods_ifs=$IFS
    IFS=$NL
    for line in $MODS_LIST; do
        IFS=$mods_ifs
        # shellcheck disable=SC2086  # a line is words (set -f: the patterns are not globbed here)
        "$1" $line
    done
    IFS=$mods_ifs
}
# the modaliases of the present devices, by bus (the patterns' prefixes, modules.py _GATING_BUSES)
device_aliases() {
    for bus in pci virtio vmbus xen acpi; do
        devs=
        set +f
        for f in "$SYS_BUS/$bus"/devices/*/modalias; do
            [ -e "$f" ] && read -r a <"$f" && devs="$devs $a"
        done
        set -f
        case $bus in
            pci) DEVS_pci=$devs ;; virtio) DEVS_virtio=$devs ;; vmbus) DEVS_vmbus=$devs ;;
            xen) DEVS_xen=$devs ;; acpi) DEVS_acpi=$devs ;;
        esac
    done
}
# is any of the patterns ($*) the modalias of a present device?
device_present() {
    for pat in "$@"; do
        case "$pat" in
            pci:*) devs=$DEVS_pci ;; virtio:*) devs=$DEVS_virtio ;; vmbus:*) devs=$DEVS_vmbus ;;
            xen:*) devs=$DEVS_xen ;; acpi*) devs=$DEVS_acpi ;;
            @late-pass) [ -n "$MODS_LATE" ] && return 0; continue ;;  # a late module's dependency: the late pass
            *) continue ;;
        esac
        for a in $devs; do
            # shellcheck disable=SC2254  # the pattern is a glob on purpose
            case "$a" in $pat) return 0 ;; esac
        done
    done
    return 1
}
load_module() {
    insmod "$MODDIR/$1" 2>/dev/null && n=$((n + 1))
    MODS_LOADED="$MODS_LOADED$1 "  # tried once: a failing one (absent hardware) is not retried
}
# One module of a pass ($1, then the patterns that gate it). A driver's dependencies come before it
# with the same patterns (libata, ata_piix: 70 each): within a pass the devices do not change, so the
# answer for the line before is reused.
gate_module() {
    mod=$1
    shift
    case "$MODS_LOADED" in *" $mod "*) return 0 ;; esac
    if [ "$1" = @late ]; then
        [ -n "$MODS_LATE" ] || return 0
        shift
    fi
    if [ $# -eq 0 ]; then
        load_module "$mod"
        return 0
    fi
    if [ "$*" != "$pass_pats" ]; then
        pass_pats=$*
        pass_present=
        device_present "$@" && pass_present=1
    fi
    if [ -n "$pass_present" ]; then
        load_module "$mod"
        again=1
    fi
}
# A pass whose devices are those of the pass before (its drivers brought none: virtio_blk, virtio_net)
# ends there: each line's answer would be the same, so the scan of the list would load nothing
# (~0.1 s under TCG on every boot).
load_passes() {
    again=1
    seen=
    scans=0
    while [ -n "$again" ]; do
        again=
        pass_pats=
        device_aliases
        now="$DEVS_pci|$DEVS_virtio|$DEVS_vmbus|$DEVS_xen|$DEVS_acpi"
        [ "$now" = "$seen" ] && break
        seen=$now
        scans=$((scans + 1))
        each_module gate_module
    done
}
MODS_LATE=
load_passes
# The mount's Python starts now, on every boot (init.head.sh start_mount): its imports (~1 s of CPU
# under emulation) fill the waits of DHCP, the context drive and the disk check. Not before the
# modules: loading them has no waits to fill (virtio_pci's probe alone is ~3.3 guest-s of CPU, the
# kernel's ACPI interpreter evaluating the _PRT for each device it enables), and run beside it the
# imports made the boot later: the overlay was up ~0.75 guest-s later on a reboot and on a first boot
# (-icount, 2 boots each).
start_mount
log modules "$n modules loaded (drivers of the devices present; the OS loads the others; list scans: $scans)"

# The @late modules, once: true when this call loaded them (the caller looks at the disks again).
# A module's load returns after the probes its init started (the kernel waits for async work at the
# end of init_module), so the disks of these controllers are there when it returns.
load_late_modules() {
    [ -z "$MODS_LATE" ] || return 1
    MODS_LATE=1
    n=0
    load_passes
    log modules "$n more loaded for the disks and CD-ROMs of the IDE, SATA and SCSI controllers (list scans: $scans)"
}

# The modules the device check left out, for an OS without a module tree of its own (90-boot.sh):
# it gets every module the initrd carries, as before the check (hot-plugged devices, shared folders).
other_module() {
    case "$MODS_LOADED" in *" $1 "*) ;; *) load_module "$1" ;; esac
}
load_other_modules() {
    n=0
    each_module other_module
    log boot "modules: $n more loaded for the OS"
}
