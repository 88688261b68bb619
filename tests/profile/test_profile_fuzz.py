"""No input gives a traceback: mutated profiles fail only with ProfileErrors that name a place."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import pytest
import yaml

from cernvm_build import profile
from cernvm_build.paths import data_dir

#: more seeds for a longer hunt: CERNVM_FUZZ_SEEDS=100 pytest tests/profile/test_profile_fuzz.py
SEEDS = int(os.environ.get("CERNVM_FUZZ_SEEDS", "4"))
NOISE = ":[]{}-!&*'\" \t\n#|>%@`,?.0123456789{{}}~\\"
SNIPPETS = ["{{ x }}", "!replace ", "null", "- ", ": ", "\t", "!!str ", "{% if %}", "&a ", "*a "]


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and text:
            i = rng.randrange(len(text))
            text = text[:i] + text[i + 1 :]
        elif op == 1:
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(NOISE) + text[i:]
        elif op == 2 and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "".join(lines)
        elif op == 3 and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        else:
            i = rng.randrange(len(text) + 1)
            text = (
                text[:i] + rng.choice(["{{ x }}", "!replace ", "null", "- ", ": ", "\t", "!!str "]) + text[i:]
            )
        lines = text.splitlines(keepends=True)
    return text


@pytest.mark.parametrize("seed", range(SEEDS))
def test_mutated_profiles_never_give_a_traceback(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    shipped = data_dir("profiles")
    (tmp_path / "keys").symlink_to(shipped / "keys")
    originals = {n: (shipped / f"{n}.yaml").read_text() for n in ("base", "preserved", "el4", "el7", "demo")}
    failures = 0
    for _ in range(60):
        for name, text in originals.items():
            (tmp_path / f"{name}.yaml").write_text(text)
        victim = rng.choice(list(originals))
        (tmp_path / f"{victim}.yaml").write_text(mutate(originals[victim], rng))
        leaf = rng.choice(["el4", "el7", "demo"])
        outcome = profile.check(tmp_path / f"{leaf}.yaml", search_path=[])
        for e in outcome.errors:
            failures += 1
            assert isinstance(e, profile.ProfileError)
            assert "\n" not in str(e) and e.hint
            assert e.where is not None and str(e.where), str(e)
    assert failures  # the mutations did break profiles


VALUES: list[object] = [
    None, 0, -1, 10**20, 1.5, True, "", "x", "{{ name }}", "{{ os }}", "{{ 1 / 0 }}", "{{ cvmfs.servers[9]}}",
    [], [1], [[1]], {}, {"a": 1}, {"a": [1]}, "@fqrn@", "/", "..", "http://", "http://[::1", "http://h:99999",
    "-----BEGIN PUBLIC KEY-----", "{{ range(10**9) | list }}",
]  # fmt: skip


def _keys(data: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(data, dict):
        return []
    return [p for k, v in data.items() for p in [(*prefix, k), *_keys(v, (*prefix, k))]]


@pytest.mark.parametrize("leaf", ["el4", "demo"])
def test_any_value_in_any_place_gives_a_profile_error_not_a_crash(tmp_path: Path, leaf: str) -> None:
    rng = random.Random(leaf)
    shipped = data_dir("profiles")
    (tmp_path / "keys").symlink_to(shipped / "keys")
    for name in ("base", "preserved"):
        (tmp_path / f"{name}.yaml").write_text((shipped / f"{name}.yaml").read_text())
    original = profile.own_settings(shipped / f"{leaf}.yaml")
    for _ in range(150):
        data = copy.deepcopy(original)
        for _ in range(rng.randint(1, 3)):
            *parents, last = rng.choice(_keys(data))
            target: object = data
            for k in parents:
                target = target[k] if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[last] = copy.deepcopy(rng.choice(VALUES))
        (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
        for e in profile.check(tmp_path / "t.yaml", search_path=[]).errors:
            assert "\n" not in str(e) and e.hint and e.where
