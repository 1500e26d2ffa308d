"""The names a plugin may import from nascore: its public surface, in one place.

A plugin (a shipped one under ``plugins/`` or a third party's) imports from the core only the names
listed here; anything else — the pipeline's classes, private helpers, module layout beneath these
names — may change without notice. ``tests/test_public_surface.py`` checks that every listed name
exists, that docs/writing-plugins.md lists them, and that the shipped plugins and
``examples/nascore-hillclimb`` import nothing else from the core.

Components receive the run as :class:`nascore.roles.Context` (a protocol); type hints name that,
never :class:`nascore.pipeline.context.RunContext`.
"""

from __future__ import annotations

PLUGIN_API: dict[str, tuple[str, ...]] = {
    # registering components
    "nascore": ("hookimpl", "Architecture", "Candidate", "get_registry", "__version__"),
    "nascore.registry": ("NoOptions", "get_registry", "build_registry"),
    # the values
    "nascore.errors": ("NascoreError", "ConfigError", "UnknownComponent", "PluginError", "ArchitectureError",
                       "CheckpointError", "DatasetError", "ConstraintError", "TrainingDiverged"),
    "nascore.arch": ("Architecture", "Candidate", "Option", "option_members"),
    "nascore.space": ("SearchSpace", "Decision", "ChoiceLayer", "Supernet", "Zero", "constrained_sample",
                      "require_space", "clone_module", "ChainLayout", "HeadFn", "chain_layout_of", "WidthDecision",
                      "width_options"),
    "nascore.width": ("SlimConv2d", "SlimBatchNorm2d", "SwitchableBatchNorm2d", "SlimLinear"),
    "nascore.cost": ("CostTable", "ResourceConstraint", "count_params", "fvcore_macs", "fvcore_macs_many",
                     "fvcore_macs_by_module", "human"),
    "nascore.config": ("Ref", "format_pydantic"),
    "nascore.data": ("DatasetSpec", "DataBundle", "Preprocessing"),
    "nascore.io": ("atomic_write", "read_json", "write_json", "write_text", "save_torch", "load_torch"),
    # the role contracts and what a component sees
    "nascore.roles": ("Context", "Trainer", "Evaluator", "Selector", "Distiller", "SearchResult", "SpaceContext"),
    # what components build on
    "nascore.trainer": ("SupernetTrainer", "TrainerConfig", "lr_factor", "rng_state_json", "rng_from_json",
                        "diverged", "weights_finite", "stage_field"),
    "nascore.search": ("evaluate", "rank", "sample_feasible", "objective"),
    "nascore.evaluate": ("accuracy", "bn_state", "load_bn_state", "recalibrate_bn"),
    "nascore.methods.teacher": ("Teacher", "load_teacher", "largest_arch", "classifier_of"),
    "nascore.methods.mixed": ("ALPHA_STATE_KEY", "ArchAlpha", "subspace_arch", "subspace_members", "subspace_size",
                              "train_steps", "path_accuracy"),
    "nascore.groundtruth.testbed": ("load_testbed", "load_testbed_file", "align", "kendall_tau", "topk_hit_rate"),
    "nascore.groundtruth.nb201_table": ("load_table",),
    # built-in components a plugin may extend or wrap
    "nascore.builtin.accuracy": ("AccuracyConfig", "AccuracyEvaluator"),
    "nascore.builtin.angle": ("AngleConfig", "AngleEvaluator"),
    "nascore.builtin.spos": ("SposConfig", "SposTrainer", "fair_cycle", "quantile"),
    "nascore.builtin.tiny": ("TinyChainSpace", "TinyChainSupernet"),
    "nascore.builtin.mobilenet": ("MobileNetSpace", "MobileNetSupernet"),
    # running a pipeline from Python (in-memory runs of a plugin's own benchmarks)
    "nascore.pipeline.run": ("open_run", "resume_run", "run_pipeline"),
}
"""Module -> the names a plugin may import from it."""
