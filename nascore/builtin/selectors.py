"""Built-in selectors (registered through the same hooks as any plugin)."""
