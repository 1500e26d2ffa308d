"""Generate docs/hooks.md from the hook specifications' signatures and docstrings.

Run ``python docs/gen_hooks.py`` after changing nascore/hookspecs.py; a test fails while the page
is out of date, so the reference never drifts from the code.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

HEADER = """# Hook reference

Generated from `nascore/hookspecs.py` by `docs/gen_hooks.py` — do not edit by hand.

Every hook receives one argument, `register`; a plugin calls it once per component. Implement a
hook with the `nascore.hookimpl` marker:

```python
from nascore import hookimpl

@hookimpl
def register_selectors(register):
    register("my_search", MySearch, config=MySearchConfig, summary="one line")
```

What each role's component must provide is in `nascore/roles.py` and [writing plugins](writing-plugins.md).
"""


def render() -> str:
    from nascore import hookspecs

    parts = [HEADER]
    for name in hookspecs.ROLES.values():
        fn = getattr(hookspecs, name)
        sig = inspect.signature(fn)
        params = ", ".join(sig.parameters)
        doc = inspect.cleandoc(fn.__doc__ or "")
        doc = doc.replace(":param register:", "**register** —").replace(":class:", "").replace("``", "`")
        doc = "\n".join(line.strip() for line in doc.splitlines())
        parts.append(f"## `{name}({params})`\n\n{doc}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    out = Path(__file__).with_name("hooks.md")
    out.write_text(render())
    print(f"wrote {out}", file=sys.stderr)
