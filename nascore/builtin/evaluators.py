"""Built-in evaluators (registered through the same hooks as any plugin)."""
