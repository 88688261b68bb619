# 02-network: loopback, then DHCP (busybox udhcpc) on the first interface that gets a lease.
ip link set lo up
NET_IF=
for i in 1 2 3 4 5 6 7 8 9 10; do
    # shellcheck disable=SC2010  # interface names are kernel identifiers, no blanks; set -f is on
    ls /sys/class/net | grep -qv '^lo$' && break
    sleep 0.3
done
# shellcheck disable=SC2045  # as above: names without blanks, and no globbing while set -f is on
for dev in $(ls /sys/class/net); do
    [ "$dev" = lo ] && continue
    ip link set "$dev" up
    if udhcpc -i "$dev" -q -n -t 8 -T 2 -s /usr/share/udhcpc/default.script >/tmp/udhcpc.log 2>&1; then
        NET_IF=$dev
        break
    fi
done
if [ -n "$NET_IF" ]; then
    log network "$NET_IF $(ip -4 -o addr show dev "$NET_IF" | awk '{print $4}') via $(cat /tmp/gateway 2>/dev/null)"
else
    log network "no DHCP lease on any interface"
fi
