"""Built-in distillers (registered through the same hooks as any plugin)."""
