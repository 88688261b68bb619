#!/bin/busybox sh
# shellcheck shell=sh
# μCernVM shutdown program, left by the initrd as /run/initramfs/shutdown (systemd's hand-back:
# after stopping the OS, systemd-shutdown switches root to /run/initramfs and runs this as PID 1 with
# the verb: reboot, poweroff, halt or kexec; the OS root is then at /oldroot).
# What the OS cannot do itself: unmount its own root (the overlay), the CernVM-FS mount under it
# and the scratch disk, and stop the FUSE daemon (a root-storage daemon systemd leaves running).
# It always ends in the verb: PID 1 must not exit.
export PATH=/bin
bb=/bin/busybox
verb=${1:-poweroff}
say() {
    read -r up _ </proc/uptime 2>/dev/null || up=0
    echo "[$up] ucernvm-shutdown: $*" >/dev/console 2>/dev/null || echo "[$up] ucernvm-shutdown: $*"
}
finish() {
    $bb sync
    case "$verb" in
        reboot | kexec) $bb reboot -f ;;
        halt) $bb halt -f ;;
        *) $bb poweroff -f ;;
    esac
}
trap finish EXIT
$bb mkdir -p /proc /sys /dev /ro /rw /rt
[ -e /proc/mounts ] || $bb mount -t proc proc /proc
[ -e /dev/console ] || $bb mount -t devtmpfs devtmpfs /dev
say "unmounting the OS root, CernVM-FS and the scratch disk ($verb)"
pids=$(cat /cvmfs_pids 2>/dev/null)
# Keep the three mounts of the stack outside the old root, then unmount everything else of it,
# deepest first (its /dev, /proc, /sys, /run).
for m in ro rw rt; do
    $bb mount --move "/oldroot/mnt/.$m" "/$m" 2>/dev/null
done
# shellcheck disable=SC2016  # an awk program
$bb awk '$2 ~ "^/oldroot/" {print $2}' /proc/mounts | $bb sort -r | while read -r m; do
    $bb umount "$m" 2>/dev/null || $bb umount -l "$m" 2>/dev/null
done
if $bb umount /oldroot; then
    say "OS root (overlay) unmounted"
else
    say "OS root busy: $($bb fuser -m /oldroot 2>/dev/null); detached"
    $bb umount -l /oldroot
fi
# The FUSE daemon ends when its mount goes; give it a few seconds, then make sure.
$bb umount /ro 2>/dev/null || $bb umount -l /ro 2>/dev/null
for p in $pids; do
    i=0
    while [ -d "/proc/$p" ] && [ $i -lt 50 ]; do
        [ $i -eq 20 ] && $bb kill -TERM "$p" 2>/dev/null
        $bb sleep 0.1
        i=$((i + 1))
    done
    [ -d "/proc/$p" ] && $bb kill -KILL "$p" 2>/dev/null
done
$bb umount /rt 2>/dev/null || $bb umount -l /rt 2>/dev/null
# The scratch disk is mounted twice (here, and in the initramfs where the daemon found its cache,
# out of reach now): read-only applies to the file system itself, so its journal is committed and
# it is marked clean whatever happens to the other mount.
$bb sync
if $bb mount -o remount,ro /rw 2>/dev/null; then
    say "scratch disk clean (read-only)"
else
    say "scratch disk still busy: $($bb fuser -m /rw 2>/dev/null)"
fi
$bb umount /rw 2>/dev/null
