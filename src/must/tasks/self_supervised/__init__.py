"""Self-supervised and semi-supervised methods as tasks.

Each method is one file with the :class:`~must.tasks.base.Task` interface extended by
``make_views`` / ``forward_views`` (:mod:`.base` explains the extension and how the model calls
it), so one student can train on ground truth, teacher pseudo labels and pretext targets at once.

Motion segmentation (Doersch & Zisserman 2017's fourth task) learns from masks derived from video,
which the reader brings with each frame (``video:DIR``): it reads them in ``sample_views``.
"""

from __future__ import annotations

from collections.abc import Callable

from must.tasks.self_supervised.barlow_twins import BarlowTwinsTask
from must.tasks.self_supervised.base import SelfSupervisedTask
from must.tasks.self_supervised.byol import BYOLTask
from must.tasks.self_supervised.colorization import ColorizationTask
from must.tasks.self_supervised.dino import DINOTask
from must.tasks.self_supervised.exemplar import ExemplarTask
from must.tasks.self_supervised.fixmatch import FixMatchTask
from must.tasks.self_supervised.flexmatch import FlexMatchTask
from must.tasks.self_supervised.freematch import FreeMatchTask
from must.tasks.self_supervised.jigsaw import JigsawTask
from must.tasks.self_supervised.mae import MAETask
from must.tasks.self_supervised.mean_teacher import MeanTeacherTask
from must.tasks.self_supervised.mocov2 import MoCoV2Task
from must.tasks.self_supervised.mocov3 import MoCoV3Task
from must.tasks.self_supervised.motion_segmentation import MotionSegmentationTask
from must.tasks.self_supervised.pirl import PirlTask
from must.tasks.self_supervised.relative_position import RelativePositionTask
from must.tasks.self_supervised.rotation import RotationTask
from must.tasks.self_supervised.semi import SemiSupervisedTask
from must.tasks.self_supervised.simclr import SimCLRTask
from must.tasks.self_supervised.simsiam import SimSiamTask
from must.tasks.self_supervised.softmatch import SoftMatchTask
from must.tasks.self_supervised.uda import UDATask
from must.tasks.self_supervised.vicreg import VICRegTask

SELF_SUPERVISED_TASKS: dict[str, Callable[..., SelfSupervisedTask]] = {
    "simclr": SimCLRTask,
    "pirl": PirlTask,
    "rotation": RotationTask,
    "jigsaw": JigsawTask,
    "relative_position": RelativePositionTask,
    "colorization": ColorizationTask,
    "exemplar": ExemplarTask,
    "byol": BYOLTask,
    "mocov2": MoCoV2Task,
    "mocov3": MoCoV3Task,
    "dino": DINOTask,
    "barlow_twins": BarlowTwinsTask,
    "vicreg": VICRegTask,
    "simsiam": SimSiamTask,
    "mae": MAETask,  # needs a ViT backbone (model.backbone=timm:vit_*)
    "motion_segmentation": MotionSegmentationTask,  # needs frames with motion masks (video:DIR)
}
"""Constructor per pretext method name: the methods that need nothing but images (one explicit
dict per family; the semi-supervised ones, which wrap a labeled task, are below)."""

SEMI_SUPERVISED_TASKS: dict[str, Callable[..., SemiSupervisedTask]] = {
    "fixmatch": FixMatchTask,
    "flexmatch": FlexMatchTask,
    "freematch": FreeMatchTask,
    "softmatch": SoftMatchTask,
    "uda": UDATask,
    "mean_teacher": MeanTeacherTask,
}
"""The semi-supervised methods: ``<method>_<task>`` wraps the run's labeled ``<task>`` (e.g.
``flexmatch_classification``) and trains its head on the unlabeled images' views."""

__all__ = [
    "BYOLTask",
    "BarlowTwinsTask",
    "DINOTask",
    "MAETask",
    "MoCoV2Task",
    "MoCoV3Task",
    "SimSiamTask",
    "VICRegTask",
    "SELF_SUPERVISED_TASKS",
    "SEMI_SUPERVISED_TASKS",
    "ColorizationTask",
    "ExemplarTask",
    "FixMatchTask",
    "FlexMatchTask",
    "FreeMatchTask",
    "MeanTeacherTask",
    "SemiSupervisedTask",
    "SoftMatchTask",
    "UDATask",
    "JigsawTask",
    "MotionSegmentationTask",
    "PirlTask",
    "RelativePositionTask",
    "RotationTask",
    "SelfSupervisedTask",
    "SimCLRTask",
]
