"""Reading a YAML file that must hold a mapping, with every problem as one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judgeopt.core.errors import ConfigError


def read_yaml_mapping(path: Path, *, what: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The mapping at the top of ``path`` (an empty file is an empty mapping); ``what`` names the kind of file in
    messages ("config file", "policy file", …) and ``error`` is the :class:`ConfigError` raised."""
    import yaml  # loaded with the first file read, not with the command line

    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data
