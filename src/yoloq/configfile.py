"""Reading run configs (frozen dataclasses) back from the YAML saved next to a run."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from yoloq.errors import YoloqError


class YamlConfig:
    """Mixin for config dataclasses: `from_dict` refuses unknown keys, `load` reads YAML.

    `settings_name` names the config in error messages ("PTQ", "QAT").
    """

    settings_name = "config"

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise YoloqError(f"unknown {cls.settings_name} settings: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise YoloqError(f"config not found: {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})
