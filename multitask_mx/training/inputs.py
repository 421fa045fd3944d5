"""A run's inputs from the flags: lists and tasks, the augmentation recipe, datasets and loaders."""
import logging

from .. import _runtime
from ..data import augment_presets, datasets, image_headers, label_tables, task_kinds, tasks as tasks_mod
from . import distributed, phases
from ..data.datasets import LstDataset, check_images_or_skip, make_loader, preflight_report
from ..errors import UserInputError
from ..data.augment import AugmentConfig, TrainTransform
from ..data.images import EvalTransform
from ..data.lists import check_label_range, infer_num_classes, read_list

_logger = logging.getLogger(__name__)


def uses_label_tables(data):
    """True when labels are read as real numbers: --task-types given, or a CSV list."""
    return bool(data.task_types) or label_tables.is_csv(data.data_train)


def read_lists(data):
    """Training and validation lists (whole: workers shard after the tasks are known), with their checks done."""
    if uses_label_tables(data):
        train, header = label_tables.read_table(data.data_train, data.image_train)
        val = label_tables.read_table(data.data_val, data.image_val)[0] if data.data_val else None
        train.header = header  # the CSV's column names: task and attribute names
    else:
        train = read_list(data.data_train, data.image_train)
        val = read_list(data.data_val, data.image_val) if data.data_val else None
    if val is not None and val.num_label_columns != train.num_label_columns:
        raise UserInputError("%s has %d label column(s) but %s has %d; both lists need the same columns."
                             % (val.source, val.num_label_columns, train.source, train.num_label_columns))
    return train, val


def resolve_tasks(data, train, val):
    """Tasks from --num-classes (or the lists), --task-names and --derived-task; each has labels in train."""
    names = data.task_names.split(",") if data.task_names else None
    if uses_label_tables(data):
        return resolve_kind_tasks(data, names, train, val)
    num_classes = tasks_mod.parse_num_classes(data.num_classes)
    if num_classes is None:
        columns = names if names and len(names) == train.num_label_columns else \
            tasks_mod.default_column_names(train.num_label_columns)
        tasks_mod.check_columns_labelled(train, columns)  # else a column would infer 0 classes
        num_classes = infer_num_classes([lst for lst in (train, val) if lst is not None])
        _logger.info("--num-classes not given: inferred %s from the lists", ",".join(map(str, num_classes)))
    for lst in filter(None, (train, val)):
        check_label_range(lst, num_classes)
    derived = [] if data.no_derived_task else data.derived_task
    tasks = tasks_mod.build_tasks(num_classes, names, derived)
    tasks_mod.check_tasks_labelled(tasks, train)
    return tasks


def resolve_kind_tasks(data, names, train, val):
    """Tasks of --task-types (all class without it) over real-valued lists; regress targets standardised."""
    types = task_kinds.parse_task_types(data.task_types) if data.task_types else \
        [("class", 1)] * train.num_label_columns
    derived = [] if data.no_derived_task else data.derived_task
    tasks = task_kinds.build_kind_tasks(types, train.labels, names, data.num_classes, derived,
                                        getattr(train, "header", None))
    for lst in filter(None, (train, val)):
        task_kinds.check_kind_labels(tasks, lst)
    for task in tasks:
        if task.kind == "regress":
            _logger.info("task %s: regression, target standardised with mean %.6g std %.6g of %s",
                         task.name, task.mean, task.std, train.source)
    return tasks


def choose_augmentation(augment, finetuning, num_epoch, train, tasks, image_shape, batch_size):
    """The augmentation Recipe: --augment's preset (auto: from this run's situation) with explicit flags on top.

    ``augment``: the AugmentSettings; ``finetuning``: the trunk starts from pretrained weights.
    """
    situation = augment_presets.Situation(image_side=min(image_shape[1:]), finetune=finetuning, num_epoch=num_epoch,
                                          images_per_class=len(train) / float(tasks[0].num_classes),
                                          num_updates=num_epoch * -(-len(train) // batch_size))
    return augment_presets.resolve_augmentation(augment, situation)


def build_datasets(data, train, val, tasks, image_shape, normalization, augment: AugmentConfig, uint8=False):
    """Training and validation datasets with their transform presets (``uint8``: normalised on the device)."""
    out_hw = image_shape[1:]
    train_tf, val_tf = TrainTransform(out_hw, normalization, augment), EvalTransform(out_hw, normalization)
    if uint8 and datasets.uint8_capable(train_tf):
        train_tf, val_tf = datasets.Uint8Output(train_tf), datasets.Uint8Output(val_tf)
        _logger.info("loader: uint8 batches, %s normalisation on the device", normalization)
    train_set = LstDataset(train, tasks, train_tf, data.skip_bad_images)
    val_set = LstDataset(val, tasks, val_tf, data.skip_bad_images) if val else None
    return train_set, val_set


def prepare_lists(data, kv, gpus=0):
    """Read, check and shard the lists; returns (train, val, tasks, loader workers).

    Tasks are resolved on the whole lists, so that every distributed worker infers
    the same classes; then each worker keeps its shard.
    """
    image_headers.set_max_pixels(data.max_image_pixels)  # before the checks and the loader's fork
    train, val = read_lists(data)
    tasks = resolve_tasks(data, train, val)
    train = distributed.shard_list(train, kv.rank, kv.num_workers)
    val = val if kv.rank == 0 else None  # validation runs on rank 0 only (docs/distributed.md)
    _logger.info("tasks: %s", ", ".join("%s (%s%s)" % (t.name, describe_kind(t),
                 ", = %s" % t.expression if t.expression else "") for t in tasks))
    threads = cap_loader_workers(data.data_nthreads) if data.data_nthreads is not None else \
        _runtime.default_loader_workers(gpus)
    phases.switch("image check")
    if data.check_images != "none":
        full = data.check_images == "full"
        train = check_images_or_skip(train, data.skip_bad_images, full, threads)
        val = check_images_or_skip(val, data.skip_bad_images, full, threads) if val else None
    phases.switch("lists")
    train = distributed.equalize_shards(train, kv)
    preflight_report(tasks, train, val)  # padding repeats a line: find_duplicates ignores that
    return train, val, tasks, threads


def cap_loader_workers(asked):
    """--data-nthreads, at most twice the usable cores: more processes only compete for them (and for memory)."""
    cap = 2 * _runtime.usable_cores()
    if asked > cap:
        _logger.warning("--data-nthreads %d: capped at %d loader workers (twice the %d usable cores)",
                        asked, cap, _runtime.usable_cores())
        return cap
    return asked


def describe_kind(task):
    """'4 classes', 'regression' or '5 attributes': a task's head in words, for logs."""
    if task.kind == "regress":
        return "regression"
    return "%d %s" % (task.num_classes, "attributes" if task.kind == "multilabel" else "classes")


def make_loaders(data, train_set, val_set, threads, batch, pin_memory=False, seed=None):
    """Training loader (shuffled, remainder rolled over) and validation loader (every image once)."""
    if data.cache_images:
        for dataset in filter(None, (train_set, val_set)):
            dataset.cache_images(threads)
    train_loader = make_loader(train_set, batch, True, threads, pin_memory=pin_memory,
                               last_batch="rollover" if len(train_set) >= batch else "keep", seed=seed)
    val_loader = make_loader(val_set, batch, False, threads, pin_memory=pin_memory) if val_set else None
    return train_loader, val_loader
