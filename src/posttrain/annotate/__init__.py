"""The annotation stage: queues for people, AI judges that ask them only where unsure, agreement.

A queue asks one kind of question (``rating``, ``accept``, ``rewrite``, ``pairwise``,
``classify``, ``comment``) about items (an interaction, or two answers to one prompt). Items come
from a SQL condition, a dataset version, given ids or active selection; annotators lease them one
at a time (``next_item``), label (``submit``) or skip them. When an item has enough labels its
consensus is written as feedback with ``source`` annotator, which the dataset builders read.
"""

from posttrain.annotate.active import SelectionResult, select
from posttrain.annotate.items import add_gold, fill
from posttrain.annotate.judges import JudgeCalibration, PrelabelResult, calibrate, prelabel, resolve_by_judges
from posttrain.annotate.queues import create_queue, get_queue, list_queues, set_state, summarise, update_guidelines
from posttrain.annotate.records import Assignment, FillResult, ItemView, Label, Progress, Queue, QueueSummary
from posttrain.annotate.resolve import resolve_queue
from posttrain.annotate.tasks import TASK_TYPES, QueueConfig, TaskType, check_label
from posttrain.annotate.work import expire_leases, next_item, skip, submit

__all__ = [
    "TASK_TYPES",
    "JudgeCalibration",
    "PrelabelResult",
    "SelectionResult",
    "calibrate",
    "prelabel",
    "resolve_by_judges",
    "select",
    "Assignment",
    "FillResult",
    "ItemView",
    "Label",
    "Progress",
    "Queue",
    "QueueConfig",
    "QueueSummary",
    "TaskType",
    "add_gold",
    "check_label",
    "create_queue",
    "expire_leases",
    "fill",
    "get_queue",
    "list_queues",
    "next_item",
    "resolve_queue",
    "set_state",
    "skip",
    "submit",
    "summarise",
    "update_guidelines",
]
