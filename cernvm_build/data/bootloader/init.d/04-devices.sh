# 04-devices: the scratch disk. First boot: partition the first EMPTY disk and make ext4 UROOT;
# later boots: check and reuse it.
# (the shell's glob: block device names are kernel identifiers, no blanks; an ls | grep was two
# processes per look)
disks_there() {
    set +f
    for d in "$SYS_BLOCK"/*; do
        case ${d##*/} in loop* | ram* | "*") ;; *) set -f; return 0 ;; esac
    done
    set -f
    return 1
}
for i in 1 2 3 4 5 6 7 8 9 10; do
    disks_there && break
    sleep 0.3
done
ROOT_DEV=$(findfs LABEL=UROOT 2>/dev/null)
# Without UROOT, the scratch disk cernvm-launch attached: a virtio disk with its serial
# (disk.SCRATCH_SERIAL). Its instance's UROOT can be nowhere else, so a first boot on it needs no
# IDE/SATA/SCSI driver. (Looked for only here: a later boot found its UROOT.)
NAMED_SCRATCH=
if [ -z "$ROOT_DEV" ]; then
    set +f
    for d in "$SYS_BLOCK"/vd*; do
        serial=
        [ -r "$d/serial" ] && read -r serial <"$d/serial"
        [ "$serial" = ucernvm-scratch ] && NAMED_SCRATCH=/dev/${d##*/}
    done
    set -f
    # not on the disks of the drivers loaded so far: the IDE/SATA/SCSI ones too (01-modules.sh),
    # before a first boot picks its empty disk among all of them
    if [ -z "$NAMED_SCRATCH" ] && load_late_modules; then
        ROOT_DEV=$(findfs LABEL=UROOT 2>/dev/null)
    fi
fi
FIRST_BOOT=
if [ -z "$ROOT_DEV" ]; then
    if [ -n "$CONTEXT_SRC" ]; then
        read_user_data /tmp/context/user-data /tmp/context/ucontext
        USER_DATA_READ=1
    fi
    # Find the first empty disk and partition it (the early mount process does: init.head.sh py_early).
    # resize_rootfs=off: at most 20 GB for the root file system, as the real μCernVM.
    size=
    [ "$U_resize_rootfs" = 0 ] && size=20480
    part=$(py_early disk first-boot $size) \
        || panic "no UROOT scratch disk and no empty disk to make one (attach a blank disk)"
    log devices "first boot: partitioned the empty disk${NAMED_SCRATCH:+ named by cernvm-launch ($NAMED_SCRATCH)}, formatting $part"
    for i in 1 2 3 4 5 6 7 8 9 10; do [ -b "$part" ] && break; sleep 0.2; done
    /sbin/mke2fs -q -F -t ext4 -L UROOT -E lazy_itable_init=1,lazy_journal_init=1 "$part" >/tmp/mke2fs.log 2>&1 \
        || panic "mke2fs on $part failed: $(tail -n 1 /tmp/mke2fs.log)"
    ROOT_DEV=$part
    FIRST_BOOT=1
else
    /sbin/e2fsck -p "$ROOT_DEV" >/tmp/e2fsck.log 2>&1
    [ $? -ge 4 ] && panic "e2fsck found errors it cannot fix on $ROOT_DEV"
    # "clean" after a clean shutdown; "recovering journal" after an unclean one
    said=
    while IFS= read -r line; do said="$said$line "; done </tmp/e2fsck.log  # (a tr: two processes)
    log devices "e2fsck: $said"
fi
mount -t ext4 "$ROOT_DEV" $ROOT_RW || panic "cannot mount the scratch disk $ROOT_DEV"
mkdir -p $ROOT_RW/aux $ROOT_RW/persistent $ROOT_RW/cache $ROOT_RW/context $ROOT_RW/work
free=
df -m $ROOT_RW >/tmp/df.txt 2>/dev/null && { read -r _; read -r _ _ _ free _; } </tmp/df.txt  # (| awk: 2 more)
log devices "scratch disk $ROOT_DEV (UROOT) mounted${FIRST_BOOT:+, new}, $free MB free"
