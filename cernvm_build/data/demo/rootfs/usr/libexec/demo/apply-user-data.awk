# Reads the cloud-config subset the demo OS understands from (possibly MIME multipart) user data:
#   hostname: NAME
#   ssh_authorized_keys:
#     - ssh-ed25519 AAAA... comment
#   mounts:
#     - - TAG                     (block style, as launch writes it)
#       - /mnt/shared/TAG
#       - 9p
#       - trans=virtio,version=9p2000.L
#   ssh_keys:
#     ed25519_private: |
#       -----BEGIN OPENSSH PRIVATE KEY-----
#       ...
# and writes out/hostname, out/authorized_keys, out/hostkey_<type>, out/mounts. Values are data: nothing is
# evaluated, names are checked against strict patterns before they become file names.
BEGIN { section = ""; keyfile = "" }
{ sub(/\r$/, "") }
/^--/ { section = ""; keyfile = ""; next }
/^hostname:/ {
    v = $0; sub(/^hostname:[ \t]*/, "", v); gsub(/["']/, "", v)
    if (v ~ /^[A-Za-z0-9][A-Za-z0-9.-]*$/ && length(v) <= 63) print v > (out "/hostname")
    section = ""; next
}
/^mounts:/ { section = "mounts"; nf = 0; next }
# cloud-config mounts entries as [spec, dir, type, options, ...]; only shared folders (9p, virtiofs)
# under /mnt, with plain names and options, become "spec dir type options" lines in out/mounts.
section == "mounts" && /^ *- - / { v = $0; sub(/^ *- - /, "", v); gsub(/["']/, "", v); m[1] = v; nf = 1; next }
section == "mounts" && /^ +- / && nf > 0 {
    v = $0; sub(/^ +- /, "", v); gsub(/["']/, "", v); m[++nf] = v
    if (nf == 4 && m[1] ~ /^[A-Za-z0-9_.-]+$/ && m[2] ~ /^\/mnt\/[A-Za-z0-9_.\/-]+$/ && m[2] !~ /\.\./ \
        && (m[3] == "9p" || m[3] == "virtiofs") && m[4] ~ /^[A-Za-z0-9=,._-]+$/)
        print m[1], m[2], m[3], m[4] >> (out "/mounts")
    next
}
/^ssh_authorized_keys:/ { section = "auth"; next }
/^ssh_keys:/ { section = "keys"; keyfile = ""; next }
/^[^ \t]/ { section = ""; keyfile = ""; next }
section == "auth" && /^[ \t]*- / {
    v = $0; sub(/^[ \t]*- [ \t]*/, "", v); gsub(/^["']|["']$/, "", v)
    # an options prefix (from="...",no-pty ssh-ed25519 ...) is sshd's own syntax: such a key was dropped
    # without a word on an OS without cloud-init
    if (v ~ /^([A-Za-z0-9-]+(="[^"]*")?(,[A-Za-z0-9-]+(="[^"]*")?)*[ \t]+)?(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+\/=]+( .*)?$/) \
        print v >> (out "/authorized_keys")
    next
}
section == "keys" && /^  [a-z0-9]+_private:/ {
    t = $1; sub(/_private:.*/, "", t)
    keyfile = (t ~ /^(ed25519|ecdsa|rsa)$/) ? out "/hostkey_" t : ""
    next
}
section == "keys" && /^  [^ ]/ { keyfile = ""; next }
section == "keys" && keyfile != "" && /^    / { v = $0; sub(/^    /, "", v); print v >> keyfile; next }
