# 08-resize: grow the scratch partition and its ext4 to the whole disk (resize_rootfs, default on;
# also when aux/resize exists).
# (Not on the first boot: the partition was just made to fill the disk.)
if [ -z "$FIRST_BOOT" ] && { [ "$U_resize_rootfs" != 0 ] || [ -f $ROOT_RW/aux/resize ]; }; then
    part=/sys/class/block/${ROOT_DEV#/dev/}
    disk=/dev/$(basename "$(readlink -f "$part/..")")
    # The Python helper (init.head.sh py_early) only when the partition ends before its disk does
    # (sysfs sizes, 512-byte sectors): every boot but the first after the disk grew has nothing to do.
    # Sizes that cannot be read leave it to the Python helper, as before.
    p_start=0; p_size=0; d_size=
    read -r p_start <"$part/start"; read -r p_size <"$part/size"
    read -r d_size <"/sys/class/block/${disk#/dev/}/size"
    if [ -b "$disk" ] && [ "$disk" != "$ROOT_DEV" ] &&
        { [ -z "$d_size" ] || [ "$((p_start + p_size))" -lt "$d_size" ]; }; then
        if [ "$(py_early disk grow "$disk")" = grown ]; then
            /sbin/resize2fs "$ROOT_DEV" >/tmp/resize2fs.log 2>&1 && log resize "$ROOT_DEV grown to the end of $disk"
        fi
    fi
    rm -f $ROOT_RW/aux/resize
fi
