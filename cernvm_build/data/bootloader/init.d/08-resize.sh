# 08-resize: grow the scratch partition and its ext4 to the whole disk (resize_rootfs, default on;
# also when aux/resize exists).
# (Not on the first boot: the partition was just made to fill the disk.)
if [ -z "$FIRST_BOOT" ] && { [ "$U_resize_rootfs" != 0 ] || [ -f $ROOT_RW/aux/resize ]; }; then
    disk=/dev/$(basename "$(readlink -f "/sys/class/block/${ROOT_DEV#/dev/}/..")")
    if [ -b "$disk" ] && [ "$disk" != "$ROOT_DEV" ]; then
        if [ "$(py cernvm_build.bootloader.disk grow "$disk")" = grown ]; then
            /sbin/resize2fs "$ROOT_DEV" >/tmp/resize2fs.log 2>&1 && log resize "$ROOT_DEV grown to the end of $disk"
        fi
    fi
    rm -f $ROOT_RW/aux/resize
fi
