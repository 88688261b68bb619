"""JSON Schema of a profile file, derived from the settings table.

It describes one file as written (so nothing is required: a parent may supply it), for editors and
other tools; the toolkit itself validates with the table directly, which also knows positions and
the checks across settings.
"""

from __future__ import annotations

from typing import Any

from ..table import Kind, Setting
from .settings import SECTIONS, SETTINGS, default_of
from .yamlnodes import REPLACE_TAG

SCHEMA_ID = "https://cernvm.cern.ch/schemas/cernvm-build/profile.json"


def _string(s: Setting) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string"}
    if s.choices:
        out["enum"] = list(s.choices)
    elif s.pattern:
        out["pattern"] = f"^(?:{s.pattern})$"
    return out


def _property(s: Setting) -> dict[str, Any]:
    prop: dict[str, Any]
    if s.kind in (Kind.STR, Kind.PATH, Kind.URL):
        prop = _string(s)
    elif s.kind in (Kind.INT, Kind.SIZE, Kind.DURATION):
        # sizes and durations may also be written with a unit ("4G", "15m"), which JSON Schema cannot check
        prop = {"type": "integer"} if s.kind is Kind.INT else {"type": ["integer", "string"]}
        if s.minimum is not None:
            prop["minimum"] = s.minimum
        if s.maximum is not None:
            prop["maximum"] = s.maximum
    elif s.kind is Kind.BOOL:
        prop = {"type": "boolean"}
    elif s.kind.is_list:
        item = _string(s) if s.kind in (Kind.LIST_STR, Kind.LIST_URL) else {"type": "string"}
        prop = {"type": "array", "items": item}
        if s.unique:
            prop["uniqueItems"] = True
        if s.single_ok:
            prop = {"anyOf": [item, prop]}
    else:
        prop = {"type": "object", "additionalProperties": {"type": "string"}}
        if s.pattern:
            prop["propertyNames"] = {"pattern": f"^(?:{s.pattern})$"}
    # null resets an inherited value to the default, so every setting accepts it
    if "type" in prop:
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        prop["type"] = [*types, "null"]
        if "enum" in prop:
            prop["enum"] = [*prop["enum"], None]
    else:
        prop["anyOf"].append({"type": "null"})
    prop["description"] = s.help
    if not s.required:
        prop["default"] = default_of(s)
    return prop


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a profile file."""
    objects: dict[str, dict[str, Any]] = {}
    for section, text in SECTIONS.items():
        objects[section] = {
            "type": "object",
            "description": text,
            "properties": {},
            "additionalProperties": False,
        }
    for s in SETTINGS:
        objects[s.section]["properties"][s.key.rsplit(".", 1)[-1]] = _property(s)
    # nest sections into their parents, deepest first
    for section in sorted((k for k in SECTIONS if k), key=lambda k: -k.count(".")):
        parent, _, last = section.rpartition(".")
        obj = objects[section]
        obj["type"] = ["object", "null"]
        objects[parent]["properties"][last] = obj
    root = objects[""]
    root.pop("description")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cernvm-build profile",
        "description": (
            "One CernVM platform. Lists and mappings may carry the YAML tag "
            f"{REPLACE_TAG} to replace, not extend, what a parent set; string values may hold jinja2 "
            "templates over the profile ({{ os.release }})."
        ),
        **root,
    }
