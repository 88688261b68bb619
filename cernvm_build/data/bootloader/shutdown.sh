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
dev=$(cat /scratch_dev 2>/dev/null)
# Why a step failed, on the console: every mount, and each process left with its mount namespace
# and open files (the scratch disk stays busy while any mount of it has a file open for writing).
diagnose() {
    say "mounts: $($bb tr '\n' ';' </proc/mounts)"
    ours=$($bb readlink /proc/self/ns/mnt)
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        proc_state "$p"
        [ -n "$st" ] || continue
        ns=$($bb readlink "$p/ns/mnt" 2>/dev/null)
        # shellcheck disable=SC2016  # an awk program
        fds=$($bb ls -l "$p/fd" 2>/dev/null | $bb awk '$NF ~ "^/" {print $NF}' | $bb tr '\n' ' ')
        [ -z "$fds" ] && [ "$ns" = "$ours" ] && continue
        say "pid ${p#/proc/} ($($bb cat "$p/comm" 2>/dev/null), $st) ns ${ns#mnt:}${ns:+ }fds: $fds"
    done
}
# systemd made every mount shared, and a mount under a shared parent cannot be moved: private first.
$bb mount --make-rprivate /oldroot 2>/dev/null
# Keep the three mounts of the stack outside the old root (if systemd-shutdown has not unmounted
# them already), then unmount everything else of it, deepest first (its /dev, /proc, /sys, /run).
# CernVM-FS is under /run/initramfs (systemd does not unmount it there, see 90-boot.sh).
$bb mount --move /oldroot/run/initramfs/cvmfs /ro 2>/dev/null ||
    $bb mount --move /oldroot/mnt/.ro /ro 2>/dev/null
for m in rw rt; do
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
# The FUSE daemon ends when its mount goes; give it a few seconds, then make sure. It is our child
# now (PID 1 inherits orphans): a zombie ("Z") has closed its files already.
gone() {
    proc_state "/proc/$1"
    [ -z "$st" ] || [ "$st" = Z ]
}
# $st: the state of the process of the /proc folder $1, empty without one (also diagnose's): the field
# after the command name in stat, read by the shell (a cut was a fork and an exec per look); the name
# may hold blanks and ") " itself, so the state follows the last ") ".
proc_state() {
    read -r st 2>/dev/null <"$1/stat" || st=
    st=${st##*) }
    st=${st%% *}
}
# A wait of 20 ms without a process: a read that times out on a fifo held open at both ends, which
# nothing writes to (the look every 0.1 s by a sleep was a fork and an exec each, and the daemon's
# end was seen 50 ms late on average). Without the fifo, a sleep.
tick_fd=
if $bb mkfifo /tick 2>/dev/null && [ -p /tick ]; then
    exec 7<>/tick  # a fifo opened for reading and writing: never blocks, never fails for root
    tick_fd=7
fi
tick() {
    if [ -n "$tick_fd" ]; then
        # shellcheck disable=SC3045  # busybox sh's read has -t, fractions of a second too
        read -r -t 0.02 _ <&7
    else
        $bb sleep 0.02
    fi
}
for p in $pids; do
    gone "$p" && say "FUSE daemon $p had ended before its mount was unmounted"
done
$bb umount /ro 2>/dev/null || $bb umount -l /ro 2>/dev/null
ended=${pids:+1}  # every daemon has ended (there was one): nothing writes to the cache any more
for p in $pids; do
    i=0
    while ! gone "$p" && [ $i -lt 250 ]; do
        [ $i -eq 100 ] && say "FUSE daemon $p still running after 2 s: TERM" && $bb kill -TERM "$p" 2>/dev/null
        tick
        i=$((i + 1))
    done
    if ! gone "$p"; then
        say "FUSE daemon $p still running after 5 s: KILL"
        $bb kill -KILL "$p" 2>/dev/null
        i=0
        while ! gone "$p" && [ $i -lt 100 ]; do tick; i=$((i + 1)); done
    fi
    gone "$p" || ended=
done
$bb umount /rt 2>/dev/null || $bb umount -l /rt 2>/dev/null
# The scratch disk is still mounted in the initramfs (where the daemon found its cache, out of reach
# now), and systemd-shutdown may have unmounted the OS's bind of it: mounting the device again gives
# a handle on the same file system. Read-only applies to the file system itself, so its journal is
# committed and it is marked clean whatever happens to the other mount.
if ! $bb grep -q ' /rw ' /proc/mounts && [ -b "$dev" ]; then
    $bb mount -t ext4 "$dev" /rw 2>/dev/null
fi
# The cache's clean mark (plaincache.py: plain/.clean holds "SINCE BEGAN" in nanoseconds: what was
# renamed into place in between is on the disk; the next daemon trusts it without the checksum check).
# The daemon writes it when its mount goes, but systemd-shutdown's read-only remount of the OS's bind
# of the disk may come first (measured: 1 shutdown in 3 left none), so it is written here too, for a
# cache whose daemon of this boot left its plain/.open ("SINCE"), once every daemon has ended: the
# time first, then the sync that makes everything before it durable.
# Only where a daemon could not write it: the daemon's own marker (its .open gone) needs no second
# read-write remount and syncs (each a flush of the disk).
opened=
for d in /rw/cache/*/plain; do
    [ -f "$d/.open" ] && opened=1
done
if [ -n "$ended" ] && [ -n "$opened" ] && $bb grep -q ' /rw ' /proc/mounts; then
    now=$($bb date +%s)000000000
    $bb mount -o remount,rw /rw 2>/dev/null
    $bb sync
    for d in /rw/cache/*/plain; do
        [ -f "$d/.open" ] || continue
        read -r since _ <"$d/.open"  # SINCE, then (taken from a marker) the last chain's BEGAN
        case "$since" in '' | *[!0-9]*) continue ;; esac
        echo "$since $now" >"$d/.clean.new" && $bb sync && $bb mv "$d/.clean.new" "$d/.clean" &&
            $bb rm -f "$d/.open"
    done
fi
for d in /rw/cache/*/plain; do
    [ -f "$d/.clean" ] && say "cache marked clean: ${d#/rw/cache/}"
done
# (the read-only remount syncs the file system itself)
if $bb mount -o remount,ro /rw 2>/dev/null; then
    say "scratch disk clean (read-only)"
else
    say "scratch disk still busy: $($bb fuser -m /rw 2>/dev/null)"
    diagnose
fi
$bb umount /rw 2>/dev/null
