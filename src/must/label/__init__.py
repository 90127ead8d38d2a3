"""Pseudo labels at scale (MuST sec. 3.2): teachers label a shared image set into
WebDataset shards with a manifest; the student reads them back by key.

* :func:`label_dataset` / :class:`LabelConfig`: the labeler (``must label``);
* :class:`LabelingTeacher`: ours (:class:`ModelTeacher`), torchvision / timm models
  (:mod:`must.label.adapters`), or any function (:class:`CallableTeacher`);
* :class:`PseudoLabels` / :class:`WithPseudoLabels`: reading them back for training.
"""

from must.label.dataset import PseudoLabels, WithPseudoLabels
from must.label.labeler import LabelConfig, label_dataset
from must.label.manifest import Manifest, read_manifest
from must.label.shards import ShardError
from must.label.open_teacher import load_labeling_teacher
from must.label.teachers import CallableTeacher, LabelingTeacher, ModelTeacher, TeacherError

__all__ = [
    "CallableTeacher", "LabelConfig", "LabelingTeacher", "Manifest", "ModelTeacher",
    "PseudoLabels", "ShardError", "TeacherError", "WithPseudoLabels", "label_dataset",
    "load_labeling_teacher", "read_manifest",
]
