"""``cernvm-build profiles``: list, show, validate, and describe (schema, reference) profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .. import profile
from ..errors import CernVMError, Location, ProfileError
from ..profile import compare, reference, schema, settings
from ..profile.yamlnodes import display
from ..termtext import visible
from . import areas, flags
from .app import Output, add_output_file, group_handler, styled, subparser, write_output
from .inputs import profile_ref

DESCRIPTION = """\
Declarative profiles: one YAML file per CernVM platform (EL4-EL9, Debian 12 and the demo).

  cernvm-build profiles list                       the platforms, their repositories and snapshots
  cernvm-build profiles show el4 --resolved        el4 with everything it extends merged in
  cernvm-build profiles validate my-platform.yaml  every problem, as file:line:column: key: message
  cernvm-build profiles diff el7 el8               the settings in which two platforms differ
  cernvm-build profiles schema > profile.json      JSON Schema for editors
  cernvm-build profiles reference                  the settings reference (Markdown)

Profiles are found among the shipped ones (cernvm_build/data/profiles/ in the package) and in
$CERNVM_PROFILE_PATH (':'-separated);
any command also takes a path to a .yaml file."""


def add_override_flags(parser: argparse.ArgumentParser) -> None:
    """The profile settings that may be given on the command line (``flag`` in the table)."""
    group = parser.add_argument_group(
        "profile settings (override the profile's, checked as if written there)"
    )
    flags.add(group, settings.SETTINGS)


def overrides(args: argparse.Namespace) -> list[profile.Override]:
    """The command-line layer of a profile: the override flags given."""
    return [profile.Override(s.key, text, s.flag or "") for s, text in flags.given(args, settings.SETTINGS)]


def load(name: str, out: Output, args: argparse.Namespace | None = None) -> profile.Profile:
    """``profile.load`` with the command-line layer of ``args`` and warnings printed."""
    given = overrides(args) if args is not None else []
    return profile.load(name, overrides=given, warn=lambda w: out.warn(f"{w} ({w.hint})"))


def _snapshot(p: profile.Profile) -> str:
    s = p.cvmfs.snapshot
    if s.tag:
        return f"tag {s.tag}"
    if s.date:
        return f"date {s.date}"
    if s.root_hash:
        return f"hash {s.root_hash[:12]}…"
    return "newest"


def _summary(p: profile.Profile) -> dict[str, Any]:
    return {
        "name": p.name,
        "os": f"{p.os.distribution} {p.os.release} {p.os.arch}",
        "repository": p.cvmfs.repository,
        "path": p.cvmfs.path,
        "snapshot": _snapshot(p),
        "frozen": p.preservation.frozen,
        "description": p.description,
        "file": str(p.source),
        "fingerprint": p.fingerprint(),
    }


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    rows: list[dict[str, Any]] = []
    failed = False
    for name in profile.list_profiles():
        outcome = profile.check(name)
        if outcome.profile is not None:
            rows.append(_summary(outcome.profile))
        else:
            failed = True
            rows.append({"name": name, "error": str(outcome.errors[0]), "file": str(outcome.path)})

    def render(data: list[dict[str, Any]]) -> None:
        table = []
        for r in data:
            if "error" in r:
                table.append([r["name"], "invalid", r["error"], "", "", ""])
            else:
                frozen = "yes" if r["frozen"] else "no"
                table.append([r["name"], r["os"], r["repository"], r["path"], r["snapshot"], frozen])
        out.table(["name", "OS", "repository", "path", "snapshot", "frozen"], table)

    out.data(rows, render)
    if failed:
        out.warn("some profiles are invalid: run 'cernvm-build profiles validate'")
    return ProfileError.exit_code if failed else 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    given = overrides(args)
    if args.origins:
        where = profile.origins(args.name, overrides=given)
        p = load(args.name, out, args).to_dict()
        # `format` belongs to the file (never inherited, not in the resolved profile): its value as written
        p["format"] = profile.own_settings(profile.locate(args.name)).get("format", 1)
        rows = [{"key": k, "value": _lookup(p, k), "from": v} for k, v in where.items()]
        out.data(
            rows,
            lambda r: out.table(["key", "value", "from"], [[str(x) for x in row.values()] for row in r]),
        )
        return 0
    if args.resolved or given:
        data = load(args.name, out, args).to_dict()
    else:
        path = profile.locate(args.name)
        data = profile.own_settings(path)
        if not out.json_mode:
            # the file as written: comments and !replace tags are part of what it says
            out.print(f"# {display(path)}", markup=False)
            out.print(path.read_text(encoding="utf-8").rstrip(), lines=True, markup=False)
            return 0

    def render(d: dict[str, Any]) -> None:
        # Where the profile was read from is no setting: as keys, the README's next step (save this as
        # my-el9.yaml, `profiles validate` it) failed with "source: unknown setting" (pr24c finding 3).
        d = dict(d)
        read_from = [str(d.pop("source"))] if "source" in d else []
        for line in read_from + [f"input: {path}" for path in d.pop("inputs", [])]:
            out.print(f"# {visible(line, one_line=True)}", markup=False)  # a path's newline ends no comment
        text = yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
        if visible(text) != text or not _encodable(text):
            # a character the terminal must not get raw (a bidi override, a zero-width space, NEL):
            # YAML's own escapes, in double quotes, so what is printed still loads as the values;
            # ``visible`` made them ``\u202e`` in a plain scalar, which loads as six other characters
            # (pr26b finding 6); so is a character stdout's encoding lacks (a non-UTF-8 locale), which
            # stdout writes as ``\u03bc``: in a plain scalar that too loaded as other characters
            text = yaml.safe_dump(d, sort_keys=False, allow_unicode=False)
        out.print(text.rstrip(), lines=True, markup=False)

    out.data(data, render)
    return 0


def _encodable(text: str) -> bool:
    """Whether stdout's encoding (the locale's) holds every character of ``text``."""
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _lookup(data: dict[str, Any], key: str) -> Any:
    value: Any = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _placed(e: CernVMError) -> dict[str, object]:
    """A problem's fields in `validate --json`: "where" as every error document has it, and its parts
    (line, column, key path), so a script or editor need not split "file:line:column: key" back up."""
    at = e.where if isinstance(e.where, Location) else None
    return {
        "message": e.message,
        "where": None if e.where is None else str(e.where),
        "line": at.line if at else None,
        "column": at.column if at else None,
        "key": at.key if at else None,
        "hint": e.hint,
    }


def cmd_validate(args: argparse.Namespace, out: Output) -> int:
    targets: list[str] = []
    for given in args.paths:
        folder = Path(given)
        if folder.is_dir():  # a folder means every profile in it
            found = sorted(str(p) for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")])
            if not found:  # "0 profile(s) valid", exit 0: a CI check of the wrong folder passed
                raise ProfileError(
                    f"{given}: no profile in this folder (no *.yaml or *.yml)",
                    hint="give the folder that holds the profiles, or the files themselves",
                )
            targets += found
        else:
            targets.append(given)
    if not args.paths:
        targets = [str(p) for p in profile.find_profiles().values()]
    report: list[dict[str, Any]] = []
    n_bad = n_errors = 0
    for target in targets:
        errors: list[CernVMError]
        warnings: list[CernVMError] = []
        try:
            outcome = profile.check(target)
            errors, file = list(outcome.errors), display(outcome.path)
            warnings = list(outcome.warnings)
        except CernVMError as missing:  # the file itself was not found
            errors, file = [missing], target
        report.append(
            {
                "file": file,
                "valid": not errors,
                "errors": [{"error": str(e), **_placed(e)} for e in errors],
                "warnings": [{"warning": str(w), **_placed(w)} for w in warnings],
            }
        )
        for w in warnings:
            if not out.json_mode:
                out.warn(f"{w} (hint: {w.hint})" if w.hint else str(w))
        if errors:
            n_bad += 1
            n_errors += len(errors)
        for e in errors:
            if not out.json_mode:
                # one line per error (the hint after it), so editors and grep can jump to it
                hint = [(f" (hint: {e.hint})", "cyan")] if e.hint else []
                out.err.print(styled(("error:", "bold red"), f" {e}", *hint), highlight=False)
    if out.json_mode:
        out.data(report)
    elif n_bad:
        out.info(f"{n_errors} error(s) in {n_bad} of {len(targets)} profile(s)")
    else:
        out.info(f"{len(targets)} profile(s) valid")
    return ProfileError.exit_code if n_bad else 0


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    found = compare.diff(load(args.a, out), load(args.b, out))
    rows = [{"key": d.key, args.a: d.a, args.b: d.b} for d in found]

    def render(data: list[dict[str, Any]]) -> None:
        if not data:
            out.print(f"{args.a} and {args.b} resolve to the same settings")
            return
        out.table(["key", args.a, args.b], [[str(v) for v in r.values()] for r in data])

    out.data(rows, render)
    return 1 if rows and args.exit_code else 0


def cmd_schema(args: argparse.Namespace, out: Output) -> int:
    sys.stdout.write(json.dumps(schema.schema(), indent=2, ensure_ascii=False) + "\n")
    return 0


def cmd_reference(args: argparse.Namespace, out: Output) -> int:
    text = reference.markdown()
    if args.output:
        write_output(args.output, text.encode(), "--output")
        out.info(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparser(sub, "profiles", help=areas.HELP["profiles"], description=DESCRIPTION)
    group.set_defaults(func=group_handler(group))
    leaves = group.add_subparsers(title="commands", metavar="COMMAND")

    subparser(
        leaves,
        "list",
        help="the profiles on the search path (name, OS, repository, path, snapshot, frozen)",
        description="List the profiles on the search path.\n\n  cernvm-build profiles list\n"
        "  cernvm-build profiles list --json | jq -r '.[].repository'",
        json=True,
        handler=cmd_list,
    )

    p = subparser(
        leaves,
        "show",
        help="one profile: its own settings, or with --resolved the full merge",
        description="Show one profile.\n\n"
        "  cernvm-build profiles show el4               the file's own settings\n"
        "  cernvm-build profiles show el4 --resolved    with base/preserved merged, templates rendered\n"
        "  cernvm-build profiles show el4 --resolved --json\n"
        "  cernvm-build profiles show el4 --origins       which file set each value (or 'default')\n"
        "  cernvm-build profiles show demo --origins --server http://127.0.0.1:9000/cvmfs/@fqrn@",
        json=True,
        handler=cmd_show,
    )
    add_override_flags(p)
    p.add_argument(
        "name", metavar="NAME", type=profile_ref, help="profile name (e.g. el7) or path to a .yaml file"
    )
    p.add_argument("--resolved", action="store_true", help="merge parents, render templates, apply defaults")
    p.add_argument(
        "--origins", action="store_true", help="each resolved setting with the file:line it comes from"
    )

    p = subparser(
        leaves,
        "validate",
        help="check profiles; one line per error, exit code 3 if any",
        description="Check profiles: YAML syntax, known keys, types, values, extends, templates and the "
        "rules across settings.\nEvery error is one line: file:line:column: key.path: message (hint).\n\n"
        "  cernvm-build profiles validate                 all profiles on the search path\n"
        "  cernvm-build profiles validate my.yaml el7     these\n"
        "  cernvm-build profiles validate site-profiles/  every .yaml in a folder",
        json=True,
        handler=cmd_validate,
    )
    p.add_argument(
        "paths",
        nargs="*",
        type=profile_ref,
        metavar="PATH",
        help="profile files or names (default: all shipped)",
    )

    p = subparser(
        leaves,
        "diff",
        help="the settings in which two resolved profiles differ",
        description="Compare two profiles after resolving them (names and file locations do not count).\n\n"
        "  cernvm-build profiles diff el7 el8\n"
        "  cernvm-build profiles diff el9 ./my-el9.yaml --json\n"
        "  cernvm-build profiles diff el5 /archive/2026/el5.yaml --exit-code   exit 1 if they differ",
        json=True,
        handler=cmd_diff,
    )
    p.add_argument("a", metavar="A", type=profile_ref, help="profile name or path")
    p.add_argument("b", metavar="B", type=profile_ref, help="profile name or path")
    p.add_argument(
        "--exit-code", action="store_true", help="exit with 1 when the profiles differ (for scripts)"
    )

    subparser(
        leaves,
        "schema",
        help="the JSON Schema of a profile file (for editors)",
        description="Print the JSON Schema (draft 2020-12) of a profile file.\n\n"
        "  cernvm-build profiles schema > profile.schema.json\n"
        "  (yaml-language-server: add '# yaml-language-server: $schema=profile.schema.json')",
        handler=cmd_schema,
    )

    p = subparser(
        leaves,
        "reference",
        help="the reference of all settings (Markdown)",
        description="Print the settings reference (Markdown), generated from the settings table.\n\n"
        "  cernvm-build profiles reference -o docs/profile-reference.md",
        handler=cmd_reference,
    )
    add_output_file(p, "write to FILE (atomically) instead of stdout (-)")
