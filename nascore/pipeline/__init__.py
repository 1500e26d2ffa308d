"""The run pipeline: a run config becomes a run folder, stage by stage, resumable at any point.

One module per concern:

* :mod:`~nascore.pipeline.run` — open a new run or resume one, and run its stages in order;
* :mod:`~nascore.pipeline.stages` — the config's stages and their keys, and what ``train`` and
  ``search`` stages do; :mod:`~nascore.pipeline.export` and :mod:`~nascore.pipeline.retrain` do
  the other two kinds;
* :mod:`~nascore.pipeline.context` — :class:`~nascore.pipeline.context.RunContext`, what a component
  sees (it satisfies :class:`nascore.roles.Context`);
* :mod:`~nascore.pipeline.runfolder` — the run folder: its files, in-stage checkpoints, state and
  results;
* :mod:`~nascore.pipeline.metrics` and :mod:`~nascore.pipeline.tensorboard` — ``metrics.jsonl`` and
  its TensorBoard mirror;
* :mod:`~nascore.pipeline.distributed` — this process's place in a torch.distributed job.

Nothing here is imported by the values, the role contracts or the components beneath it.
"""
