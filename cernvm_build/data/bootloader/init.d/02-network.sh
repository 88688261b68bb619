# 02-network: loopback, then DHCP (busybox udhcpc) on the first interface that gets a lease.
ip link set lo up
NET_IF=
# The interfaces by the shell's own glob (interface names are kernel identifiers, no blanks): an
# ls | grep was two processes per look, on the one CPU the mount's imports use meanwhile.
net_ifs() {
    set +f
    ifs=
    for dev in "$SYS_NET"/*; do
        dev=${dev##*/}
        [ "$dev" = lo ] || [ "$dev" = "*" ] || ifs="$ifs $dev"
    done
    set -f
}
for i in 1 2 3 4 5 6 7 8 9 10; do
    net_ifs
    [ -n "$ifs" ] && break
    sleep 0.3
done
for dev in $ifs; do
    ip link set "$dev" up
    if udhcpc -i "$dev" -q -n -t 8 -T 2 -s /usr/share/udhcpc/default.script >/tmp/udhcpc.log 2>&1; then
        NET_IF=$dev
        break
    fi
done
if [ -n "$NET_IF" ]; then
    # what the udhcpc script set (read by the shell: an ip | awk and a cat were five processes)
    addr=; gw=
    read -r addr 2>/dev/null </tmp/address
    read -r gw 2>/dev/null </tmp/gateway
    log network "$NET_IF $addr via $gw"
else
    log network "no DHCP lease on any interface"
fi
