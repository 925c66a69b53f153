"""One table of device attributes (kind, field, type, unit, default, meaning), read off the model.

The pydantic field descriptions in ``vpp.model`` are the single source: the
API's OpenAPI document carries them, and ``docs/devices.md`` is this table
rendered (``python -m vpp.device_table > docs/devices.md``; a test keeps it current).
"""

from __future__ import annotations

import re
import typing

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vpp.model import PV, Battery, EvCharger, InterruptibleLoad, ShiftableLoad

DEVICE_MODELS = (Battery, PV, InterruptibleLoad, ShiftableLoad, EvCharger)
_UNIT = re.compile(r"\s*\[([^\]]+)\]\s*$")


def _type_name(annotation: object) -> str:
    text = typing.get_origin(annotation) and str(annotation) or getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("vpp.model.", "").replace("Literal", "")


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return repr(info.default_factory())
    if info.default is PydanticUndefined:
        return "required"
    return repr(getattr(info.default, "value", info.default))


def attribute_rows() -> list[tuple[str, str, str, str, str, str]]:
    """``(kind, field, type, unit, default, meaning)`` for every field of every device kind."""
    rows = []
    for model in DEVICE_MODELS:
        kind = model.model_fields["kind"].default.value
        for name, info in model.model_fields.items():
            if name == "kind":
                continue
            description = info.description or ""
            unit_match = _UNIT.search(description)
            unit = unit_match.group(1) if unit_match else ""
            meaning = _UNIT.sub("", description)
            rows.append((kind, name, _type_name(info.annotation), unit, _default(info), meaning))
    return rows


def markdown() -> str:
    """The table as Markdown."""
    lines = [
        "# Device attributes",
        "",
        "Generated from `vpp/model.py` by `python -m vpp.device_table`; do not edit by hand.",
        "Power in generator convention: + into the park network.",
        "",
        "| kind | field | type | unit | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in attribute_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
