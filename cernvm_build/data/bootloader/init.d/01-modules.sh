# 01-modules: the kernel modules the build resolved (dependencies first), in that order.
n=0
while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$(uname -r)/$mod" 2>/dev/null && n=$((n + 1))
done </etc/ucernvm/modules
log modules "$n modules loaded"
