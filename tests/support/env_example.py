"""`.env.example`, generated from `Settings` (names, defaults, docstrings, sections).

Regenerate after changing a setting: ``uv run python -m tests.support.env_example > .env.example``.
"""

from __future__ import annotations

import ast
import inspect

import msgspec

from xenios_ai import settings as settings_module
from xenios_ai.settings import Secret, Settings

HEADER = """\
# Xenios AI backend settings: copy to .env (dev) or set them in the environment. Every variable is optional
# in dev; ENVIRONMENT=production requires XENIOS_BACKEND_API_KEY, DATABASE_URL, REDIS_URL, OPENROUTER_API_KEY
# and SUPABASE_URL or SUPABASE_JWT_SECRET. The values shown are the defaults.
# Generated from src/xenios_ai/settings.py by: uv run python -m tests.support.env_example > .env.example
"""


def setting_docs() -> tuple[dict[str, str], dict[str, str]]:
    """(field -> docstring, field -> section title) read from the Settings class source."""
    source = inspect.getsource(settings_module)
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    docs: dict[str, str] = {}
    sections: dict[str, str] = {}
    for node, following in zip(cls.body, [*cls.body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        above = lines[node.lineno - 2].strip()
        if above.startswith("# ---"):
            sections[name] = above.removeprefix("# ---").strip()
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[name] = " ".join(following.value.value.split())
    return docs, sections


def _value(default: object) -> str:
    if default is None or isinstance(default, Secret):
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, dict):
        return "'" + msgspec.json.encode(default).decode() + "'"
    return str(default)


def render() -> str:
    docs, sections = setting_docs()
    defaults = Settings()
    out = [HEADER]
    for field in msgspec.structs.fields(Settings):
        if field.name in sections:
            out.append(f"\n# ==== {sections[field.name]}")
        if field.name in docs:
            out.append(f"# {docs[field.name]}")
        out.append(f"# {field.name.upper()}={_value(getattr(defaults, field.name))}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
