"""Built-in datasets (registered through the same hooks as any plugin)."""
