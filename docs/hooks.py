"""mkdocs hook: the results schema page is generated from the typed results (`advlab.core.results.json_schema`),
never written by hand: `<!-- results-schema -->` in schema.md becomes one table per type and the JSON Schema."""
from __future__ import annotations

import json
from typing import Any

from advlab.core.results import json_schema

MARK = "<!-- results-schema -->"


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    if spec.get("type") == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if spec.get("type") == "object" and "additionalProperties" in spec:
        return f"object of {_type(spec['additionalProperties'])}"
    if "const" in spec:
        return f"`{spec['const']}`"
    return spec.get("type", "any")


def _table(name: str, body: dict[str, Any]) -> str:
    rows = [f"## {name}", "", body.get("description", ""), "", "| key | type | required |", "|---|---|---|"]
    required = set(body.get("required", []))
    rows += [f"| `{key}` | {_type(spec)} | {'yes' if key in required else ''} |"
             for key, spec in body.get("properties", {}).items()]
    if body.get("additionalProperties") is not False:
        rows.append("| (other keys) | what the task or plugin adds | |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARK not in markdown:
        return markdown
    schema = json_schema()
    parts = [_table("Results", schema)]
    parts += [_table(name, body) for name, body in schema["$defs"].items()]
    parts.append("## The JSON Schema\n\n```json\n" + json.dumps(schema, indent=1) + "\n```")
    return markdown.replace(MARK, "\n\n".join(parts))
