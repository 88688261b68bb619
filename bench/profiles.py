"""Profiles benchmark: what resolving and validating profiles costs, next to plain YAML parsing.

Measured in the same run:
- loading every shipped profile (read all layers, merge, render templates, type, check, parse the
  PEM keys) against ``yaml.safe_load`` of the same files (parse only, no positions);
- validating the broken-profile corpus (every error with file:line:column) against validating the
  same files, as plain data, with ``jsonschema`` and the generated schema (types only, no positions,
  no cross-setting rules);
- a 30-level ``extends`` chain (merge cost grows with depth);
- ``cernvm-build profiles list --json`` end to end (process start-up, including every command area's
  imports) against ``python -c pass``.
Loads are cold (the parsed-file cache is cleared each time).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jsonschema
import yaml

from bench.common import Result, flags, print_table, timer
from cernvm_build import profile
from cernvm_build.paths import data_dir
from cernvm_build.profile.schema import schema
from cernvm_build.profile.yamlnodes import clear_cache

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "profile" / "broken"


def _best(fn: object, repeat: int) -> float:
    """Median seconds of ``repeat`` runs of ``fn()`` (the median resists a noisy neighbour)."""
    times = []
    for _ in range(repeat):
        with timer() as t:
            fn()  # type: ignore[operator]
        times.append(t["s"])
    return statistics.median(times)


class _PlainLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml.safe_load (libyaml, as the toolkit uses) reading ``!replace`` values as plain data."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_PlainLoader.add_constructor("!replace", _untagged)
# dates stay strings, as in the toolkit's own loader
_PlainLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in _PlainLoader.yaml_implicit_resolvers.items()
}


def _plain(path: Path) -> object:
    return yaml.load(path.read_text(), Loader=_PlainLoader)


def _load_all() -> None:
    clear_cache()  # cold: every file parsed again, as in a fresh process
    for name in profile.list_profiles():
        profile.load(name)


def _parse_all(files: list[Path]) -> None:
    for f in files:
        _plain(f)


def _validate_corpus(files: list[Path]) -> int:
    clear_cache()
    return sum(len(profile.check(f).errors) for f in files)


def _jsonschema_corpus(files: list[Path], validator: jsonschema.Draft202012Validator) -> int:
    n = 0
    for f in files:
        try:
            data = _plain(f)
        except (yaml.YAMLError, ValueError):
            n += 1
            continue
        n += sum(1 for _ in validator.iter_errors(data))
    return n


def _chain(folder: Path, depth: int) -> Path:
    key = data_dir("profiles") / "keys" / "demo.cernvm.test.pub"
    (folder / "p0.yaml").write_text(
        "os: {release: 9, distribution: AlmaLinux}\n"
        f"cvmfs: {{repository: demo.cernvm.test, servers: ['http://127.0.0.1/cvmfs/@fqrn@'], "
        f"public_keys: [{key}]}}\n"
        "bootloader: {branch: demo, version: '2026.11'}\n"
    )
    for i in range(1, depth + 1):
        (folder / f"p{i}.yaml").write_text(
            f"extends: p{i - 1}\nbootloader: {{cmdline: [opt{i}=1]}}\n"
            f"container: {{labels: {{k{i}: '{{{{ name }}}}'}}}}\n"
        )
    return folder / f"p{depth}.yaml"


def run(quick: bool) -> list[Result]:
    repeat = 5 if quick else 20
    results: list[Result] = []

    shipped = list(profile.find_profiles().values())
    n_profiles = len(profile.list_profiles())
    ours = _best(_load_all, repeat)
    parse = _best(lambda: _parse_all(shipped), repeat)
    results.append(
        Result(
            "profiles.load",
            "load all shipped (per profile)",
            ours / n_profiles * 1000,
            "ms",
            reference="yaml.safe_load of the files",
            reference_value=parse / n_profiles * 1000,
            aim="< 20 ms per profile",
            ok=ours / n_profiles < 0.020,
            extra={"profiles": float(n_profiles), "files": float(len(shipped))},
        )
    )

    corpus = sorted(CORPUS.glob("*.yaml"))
    validator = jsonschema.Draft202012Validator(schema())
    found = _validate_corpus(corpus)
    js_found = _jsonschema_corpus(corpus, validator)
    caught = sum(1 for f in corpus if _jsonschema_corpus([f], validator))
    ours = _best(lambda: _validate_corpus(corpus), repeat)
    ref = _best(lambda: _jsonschema_corpus(corpus, validator), repeat)
    results.append(
        Result(
            "profiles.validate",
            "broken corpus (per file)",
            ours / len(corpus) * 1000,
            "ms",
            reference="jsonschema on plain YAML",
            reference_value=ref / len(corpus) * 1000,
            aim="every file caught",
            ok=all(profile.check(f).errors for f in corpus),
            extra={
                "files": float(len(corpus)),
                "errors_ours": float(found),
                "errors_jsonschema": float(js_found),
                "files_caught_by_jsonschema": float(caught),
            },
        )
    )

    depth = 30
    with tempfile.TemporaryDirectory() as tmp:
        leaf = _chain(Path(tmp), depth)
        ours = _best(lambda: (clear_cache(), profile.load(leaf)), repeat)
        files = sorted(Path(tmp).glob("*.yaml"))
        parse = _best(lambda: _parse_all(files), repeat)
        assert len(profile.load(leaf).bootloader.cmdline) == depth
    results.append(
        Result(
            "profiles.extends",
            f"{depth}-level extends chain",
            ours * 1000,
            "ms",
            reference="yaml.safe_load of the files",
            reference_value=parse * 1000,
            aim="< 250 ms",
            ok=ours < 0.25,
        )
    )

    exe = Path(sys.executable).parent / "cernvm-build"
    cli = _best(
        lambda: subprocess.run([str(exe), "profiles", "list", "--json"], capture_output=True, check=True), 3
    )
    bare = _best(lambda: subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True), 3)
    results.append(
        Result(
            "profiles.cli",
            "profiles list --json (wall)",
            cli,
            "s",
            reference="python -c pass",
            reference_value=bare,
            aim="< 2 s",
            ok=cli < 2.0,
        )
    )
    return results


if __name__ == "__main__":
    flags(__doc__, {"--quick": "a smaller run (fewer rounds or inputs)"})
    res = run(quick="--quick" in sys.argv)
    print_table(res)
    for r in res:
        if r.extra:
            print(f"  {r.bench}: {r.extra}")
