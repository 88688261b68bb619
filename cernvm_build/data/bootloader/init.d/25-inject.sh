# 25-inject: cernvm_inject (base64 .tar.gz) unpacked into the root once per distinct payload, by
# bootloader/inject.py: links resolved inside the OS root (busybox tar followed them in the
# initramfs), the payload checked whole before anything is written.
if [ -n "$U_cernvm_inject" ]; then
    sum=$(echo "$U_cernvm_inject" | sha256sum | cut -c1-64)
    if [ "$(cat $ROOT_RW/aux/injected 2>/dev/null)" != "$sum" ]; then
        if said=$(echo "$U_cernvm_inject" | py cernvm_build.bootloader.inject "$ROOT" 2>&1); then
            echo "$sum" >$ROOT_RW/aux/injected
        fi
        log inject "$said"
    fi
fi
