"""The hook specifications: how a plugin adds components to nascore.

Every hook hands the plugin a ``register`` callable; the plugin calls it once per component::

    register(name, factory, config=ConfigModel, summary="one line")

``factory(config, ctx)`` builds the component from its validated options (an instance of
``config``, a pydantic model with ``extra="forbid"``) and the run as a :class:`nascore.roles.Context`.
The core records which plugin (distribution, version) registered what, refuses duplicate names
naming both plugins, and reports a plugin whose hook raises without letting it break the others.
What each role's object must provide is written in :mod:`nascore.roles`.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("nascore")
hookimpl = pluggy.HookimplMarker("nascore")
"""Marks a plugin's hook implementations (also importable as ``nascore.hookimpl``)."""

Register = Callable[..., None]
"""The ``register(name, factory, config=Model, summary=...)`` callable each hook receives."""


@hookspec
def register_search_spaces(register: "Register") -> None:
    """Add search spaces.

    :param register: call ``register(name, factory, config=Model, summary=...)``; ``factory(cfg,
        ctx)`` returns a :class:`nascore.space.SearchSpace`.
    """


@hookspec
def register_trainers(register: "Register") -> None:
    """Add weight-sharing (supernet) trainers.

    :param register: ``factory(cfg, ctx)`` returns a :class:`nascore.roles.Trainer` (usually a
        subclass of :class:`nascore.trainer.SupernetTrainer`); ``cfg`` should subclass
        :class:`nascore.trainer.TrainerConfig`.
    """


@hookspec
def register_evaluators(register: "Register") -> None:
    """Add evaluators, which score architectures with the supernet (or a table).

    :param register: ``factory(cfg, ctx)`` returns a :class:`nascore.roles.Evaluator`.
    """


@hookspec
def register_selectors(register: "Register") -> None:
    """Add selectors (search strategies, shrinkers, tree searches).

    :param register: ``factory(cfg, ctx)`` returns a :class:`nascore.roles.Selector`.
    """


@hookspec
def register_distillers(register: "Register") -> None:
    """Add distillers: extra losses from a teacher (another path, an external or slimmable net).

    :param register: ``factory(cfg, ctx)`` returns a :class:`nascore.roles.Distiller`.
    """


@hookspec
def register_datasets(register: "Register") -> None:
    """Add datasets.

    :param register: ``factory(cfg, ctx)`` returns a :class:`nascore.data.DatasetSpec`.
    """


@hookspec
def register_recipes(register: "Register") -> None:
    """Add ready-made run configs, runnable as ``nascore run NAME``.

    :param register: ``register(name, config, summary=...)`` where ``config`` is a dict or a
        path to a YAML file shipped in the plugin package.
    """


ROLES: dict[str, str] = {
    "space": "register_search_spaces",
    "trainer": "register_trainers",
    "evaluator": "register_evaluators",
    "selector": "register_selectors",
    "distiller": "register_distillers",
    "dataset": "register_datasets",
    "recipe": "register_recipes",
}
