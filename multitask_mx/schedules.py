"""Old home of the learning-rate schedules, kept as an alias of ``multitask_mx.training.schedules``.

Optimizer states (``.states`` files, and what dist_async servers unpickle) name the
schedule classes by the module they were defined in; runs saved before the stage
packages existed name this one (tests/training/test_states_compat.py).
"""
from .training.schedules import (CosineSchedule, CyclicSchedule, PolySchedule, Schedule, ScheduleConfig,
                                 StepSchedule)

# every class a pickled schedule refers to
__all__ = ["CosineSchedule", "CyclicSchedule", "PolySchedule", "Schedule", "ScheduleConfig", "StepSchedule"]
