# 25-inject: cernvm_inject (base64 .tar.gz) unpacked into the root once per distinct payload.
if [ -n "$U_cernvm_inject" ]; then
    sum=$(echo "$U_cernvm_inject" | sha256sum | cut -c1-64)
    if [ "$(cat $ROOT_RW/aux/injected 2>/dev/null)" != "$sum" ]; then
        if echo "$U_cernvm_inject" | base64 -d | tar -xzf - -C $ROOT; then
            echo "$sum" >$ROOT_RW/aux/injected
            log inject "cernvm_inject unpacked into /"
        else
            log inject "cernvm_inject is not a base64 .tar.gz, ignored"
        fi
    fi
fi
