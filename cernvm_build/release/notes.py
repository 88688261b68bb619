"""Release notes from the index and the previous release's index: what is in it and what changed."""

from __future__ import annotations

from ..releaseindex import ReleaseIndex


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _cell(value: object) -> str:
    """An index value as one Markdown table cell: a '|' ended the cell (and the row's shape), a line
    break the row, '<' began raw HTML; the values come from profiles and the repository's tags."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")


def changes(new: ReleaseIndex, old: ReleaseIndex | None) -> list[str]:
    if old is None:
        return ["First release indexed by this toolkit."]
    out: list[str] = []
    before = {p.name: p for p in old.profiles}
    after = {p.name: p for p in new.profiles}
    for name in sorted(after.keys() - before.keys()):
        out.append(f"New platform `{name}` ({after[name].os}).")
    for name in sorted(before.keys() - after.keys()):
        out.append(f"Platform `{name}` ({before[name].os}) is no longer built.")
    for name in sorted(after.keys() & before.keys()):
        a, b = after[name], before[name]
        if a.snapshot.root_hash != b.snapshot.root_hash:
            out.append(
                f"`{name}`: OS snapshot {b.snapshot.tag or '-'} (`{(b.snapshot.root_hash or '-')[:12]}`) → "
                f"{a.snapshot.tag or '-'} (`{(a.snapshot.root_hash or '-')[:12]}`)."
            )
        if a.profile_sha256 != b.profile_sha256:
            out.append(f"`{name}`: profile settings changed.")
        if a.frozen != b.frozen:
            out.append(f"`{name}`: now {'frozen' if a.frozen else 'no longer frozen'}.")
    old_formats = {(art.profile, art.format) for art in old.artifacts}
    new_formats = sorted({(art.profile, art.format) for art in new.artifacts} - old_formats)
    out += [f"New artifact format `{fmt}` for `{prof}`." for prof, fmt in new_formats]
    return out or [f"Rebuild of {old.version}'s platforms; no platform or snapshot changes."]


def render(new: ReleaseIndex, old: ReleaseIndex | None) -> str:
    lines = [f"# CernVM release {new.version}", "", f"Released {new.date}.", ""]
    lines += ["## Changes" + (f" since {old.version}" if old else ""), ""]
    lines += [f"- {c}" for c in changes(new, old)] + [""]
    lines += ["## Platforms", "", "| profile | OS | repository | path | snapshot | root hash | frozen |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for p in new.profiles:
        s = p.snapshot
        cells = [_cell(v) for v in (p.name, p.os, s.repository, s.path, s.tag or "-")]
        cells += [f"`{(s.root_hash or '-')[:16]}`", "yes" if p.frozen else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Artifacts", "", "| file | size | sha256 |", "|---|---|---|"]
    for a in sorted(new.artifacts, key=lambda a: a.path):
        lines.append(f"| {_cell(a.path)} | {_size(a.size)} | `{a.sha256}` |")
    if new.signature:
        lines += ["", f"`SHA256SUMS` is signed (`{new.signature}`) by OpenPGP key `{new.signer}`."]
    return "\n".join(lines) + "\n"
