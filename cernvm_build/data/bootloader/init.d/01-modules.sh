# 01-modules: the kernel modules the build resolved (dependencies first), in that order. A line is a
# module's path, then the device aliases that gate it (none: always loaded, e.g. the filesystems).
# A gated module (a driver) loads only when a present device's modalias matches: the OS loads the
# rest itself from its own module tree (90-boot.sh loads them here when the OS has none). A pass
# repeats while it loaded drivers, whose buses (virtio, vmbus) bring devices of their own.
MODDIR=/lib/modules/$(uname -r)
MODS_LOADED=" "
n=0
# the modaliases of the present devices, by bus (the patterns' prefixes, modules.py _GATING_BUSES)
device_aliases() {
    for bus in pci virtio vmbus xen acpi; do
        devs=
        set +f
        for f in "/sys/bus/$bus"/devices/*/modalias; do
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
            xen:*) devs=$DEVS_xen ;; acpi*) devs=$DEVS_acpi ;; *) continue ;;
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
again=1
while [ -n "$again" ]; do
    again=
    device_aliases
    while read -r mod pats; do
        [ -n "$mod" ] || continue
        case "$MODS_LOADED" in *" $mod "*) continue ;; esac
        # shellcheck disable=SC2086  # the patterns are words
        if [ -z "$pats" ]; then
            load_module "$mod"
        elif device_present $pats; then
            load_module "$mod"
            again=1
        fi
    done </etc/ucernvm/modules
done
log modules "$n modules loaded (drivers of the devices present; the OS loads the others)"

# The modules the device check left out, for an OS without a module tree of its own (90-boot.sh):
# it gets every module the initrd carries, as before the check (hot-plugged devices, shared folders).
load_other_modules() {
    n=0
    while read -r mod _; do
        case "$MODS_LOADED" in *" $mod "*) ;; *) [ -z "$mod" ] || load_module "$mod" ;; esac
    done </etc/ucernvm/modules
    log boot "modules: $n more loaded for the OS"
}
