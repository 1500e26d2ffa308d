"""nascore's own components, registered through the same hooks as any plugin."""

DEFAULT_PLUGINS = (
    "nascore.builtin.spaces",
    "nascore.builtin.datasets",
    "nascore.builtin.trainers",
    "nascore.builtin.evaluators",
    "nascore.builtin.cost_evaluators",
    "nascore.builtin.accuracy",
    "nascore.builtin.selectors",
    "nascore.builtin.evolution",
    "nascore.builtin.regularized",
    "nascore.builtin.angle",
    "nascore.builtin.distillers",
)
