"""The Python API: ``train`` and ``load``, with the same names as the command-line flags.

::

    import multitask_mx as mtx
    history = mtx.train(data_train="train.lst", image_train="images/", num_classes=4,
                        network="resnet18_v1", image_shape=(3, 64, 64), num_epoch=5, save_result="runs/x")
    model = mtx.load("runs/x", epoch="best")
    model.predict(["a.jpg", "b.jpg"])

Keyword arguments are the command line's flags: each value is checked by that flag's own
type and choices (``commands/keywords.py``, no argv round trip), so a notebook run and a
CLI run with the same settings are the same run (config.json records the same flags),
and every check the CLI makes applies here too. Errors a user can fix raise
``UserInputError``; a mistyped keyword raises ``TypeError`` naming the closest ones.
"""
import argparse

from . import _runtime


def _command_parser(command):
    import importlib
    module = importlib.import_module("multitask_mx.commands." + command)
    parser = argparse.ArgumentParser(prog="multitask_mx.%s" % command, add_help=False)
    module.add_arguments(parser)
    return parser


def parse_flags(command, **flags):
    """The ``argparse.Namespace`` that ``multitask-mx COMMAND`` would build from these flags (no argv).

    Each value is checked by its flag's type and choices (UserInputError); an unknown
    name raises TypeError naming the closest flags.
    """
    from .commands.keywords import namespace_from_values
    return namespace_from_values(_command_parser(command), flags)


def train(**flags):
    """Train a multi-task network; returns the history (one dict per epoch, as history.json).

    Keyword arguments are ``multitask-mx train``'s flags with ``_`` for ``-``
    (``data_train``, ``image_shape=(3, 64, 64)``, ``num_classes=4`` or ``"4,2"``,
    ``gpus="0,1"``, ``resume=True``, ...); see ``multitask-mx train --help``.
    ``config="runs/x/config.json"`` repeats that run's flags, the keywords given override them.
    """
    _runtime.configure_threads(int(flags.get("cpus") or 1))
    from .training import pipeline
    from .training.config import TrainConfig
    if flags.get("config"):  # config="runs/x/config.json": that run's flags, these keywords on top
        from .commands.train import with_saved_flags
        return pipeline.train(TrainConfig.from_args(with_saved_flags(_command_parser("train"), flags)))
    return pipeline.train(TrainConfig.from_args(parse_flags("train", **flags)))


def load(save_result, epoch="default", save_name=None, gpus=None):
    """Load a trained model from a run directory (``epoch``: a number, 'best', 'latest', or by default
    the best epoch where the run recorded one, else the newest: the CLI's default too).

    Returns a ``Model`` whose ``predict(paths)`` gives the top classes of every task.
    """
    from .use import inference
    from .devices import parse_contexts
    ctxs = parse_contexts(gpus, 1) if gpus else None
    return Model(inference.load_model(save_result, save_name, inference.parse_epoch(epoch), ctxs))


class Model:
    """A trained network with its tasks and class names (wraps ``inference.SavedModel``)."""

    def __init__(self, saved):
        self.saved = saved

    @property
    def task_names(self):
        """Task names in output order."""
        return self.saved.task_names

    def predict(self, paths, top_k=1, batch_size=32, tta="none"):
        """Per image: ``{"path", "tasks": {task: [{"index", "class", "prob"}, ...]}}`` or ``{"path", "error"}``.

        ``paths``: one path (str or os.PathLike) or a sequence of them. ``top_k``: classes per
        task, 1 or more, as the CLI's ``--show``. An image that cannot be used (missing,
        corrupt, over the pixel limit) gives an error row, not an exception.
        """
        import os
        from .use import inference
        from .use.predictions import check_show, prediction_rows
        check_show(top_k, "top_k")
        if isinstance(paths, (str, bytes, os.PathLike)):  # one image, not a sequence of one-character paths
            paths = [paths]
        paths = [os.fsdecode(p) for p in paths]
        cfg = inference.PredictConfig(batch_size=batch_size, workers=0, tta=tta, progress=False)
        predictions = inference.predict_paths(self.saved, paths, cfg)
        return prediction_rows(self.saved, paths, predictions, top_k)
