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
# Only cloud-config is read, as cloud-init decides what is cloud-config: a MIME part of type
# text/cloud-config, or a text/plain (or untyped, or single non-MIME) document whose first non-blank line
# starts with #cloud-config. hostname:/ssh_keys: lines in a user's shell script or text part were
# appended to the pinned host key: sshd could not load it and launch waited for SSH.
# LF, CRLF or a lone CR (old Mac) ends a line, as for the bootloader's raw_lines and cloud-init
BEGIN { RS = "\r\n|\r|\n"; section = ""; keyfile = ""; state = "start"; cc = 0; nb = 0 }
# a header block: Content-Type (folded lines joined) says what the part or document holds
function headers_done(   t, b) {
    t = tolower(ctype); sub(/^[ \t]*content-type:[ \t]*/, "", t); sub(/[ \t]*;.*/, "", t)
    section = ""; keyfile = ""
    if (t ~ /^multipart\//) {
        b = ctype; sub(/^.*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=/, "", b)
        if (b ~ /^"/) { sub(/^"/, "", b); sub(/".*/, "", b) } else sub(/[ \t;].*/, "", b)
        if (b != "") bound[++nb] = b
        state = "skip"; cc = 0; return
    }
    state = "body"
    cc = (t == "text/cloud-config") ? 1 : (t == "" || t == "text/plain" || t == "text/x-not-multipart") ? -1 : 0
}
function is_boundary(line,   i) {
    sub(/[ \t]+$/, "", line)
    for (i = 1; i <= nb; i++)
        if (line == "--" bound[i] || line == "--" bound[i] "--") return (line == "--" bound[i]) ? 1 : 2
    return 0
}
# MIME when the first non-blank line is a Content-Type or MIME-Version header, as launch decides
state == "start" {
    if ($0 ~ /^[ \t]*$/) next
    if (tolower($0) ~ /^[ \t]*(content-type|mime-version):/) { state = "head"; ctype = ""; hname = "" }
    else { state = "body"; cc = -1 }
}
nb > 0 && /^--/ && (k = is_boundary($0)) {
    if (k == 1) { state = "head"; ctype = ""; hname = "" } else { state = "skip"; cc = 0 }
    section = ""; keyfile = ""; next
}
state == "head" {
    if ($0 == "") { headers_done(); next }
    if ($0 ~ /^[ \t]/ && hname != "") { if (hname == "content-type") ctype = ctype " " $0; next }
    hname = tolower($0); sub(/^[ \t]*/, "", hname); sub(/:.*/, "", hname)
    if (hname == "content-type") ctype = $0
    next
}
state != "body" { next }
cc == -1 { if ($0 ~ /^[ \t]*$/) next; cc = (tolower($0) ~ /^[ \t]*#cloud-config/) ? 1 : 0 }
cc != 1 { next }
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
