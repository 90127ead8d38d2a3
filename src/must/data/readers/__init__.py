"""Dataset readers: every format a user brings (and the embedded world) as one sample structure.

``open_dataset(DatasetConfig(format=..., root=...))`` is the entry point; the classes below are
the per-format readers it picks from, usable directly.
"""

from must.data.readers.cifar import CifarDataset
from must.data.readers.coco import CocoDetection
from must.data.readers.coco_segmentation import CocoPanopticSemantic, CocoStuffSemantic
from must.data.readers.compose import ComposedDataset, ImageEntry, LabelSource, TargetSource
from must.data.readers.config import DatasetConfig, parse_dataset_spec
from must.data.readers.dense_maps import DenseFolders, DenseMapSource
from must.data.readers.errors import DataError, DataWarning
from must.data.readers.fashion_mnist import FashionMNIST
from must.data.readers.formats import FORMATS, open_dataset, open_for_task, open_images
from must.data.readers.image_folder import ImageFolder
from must.data.readers.reader_dataset import ReaderDataset
from must.data.readers.unlabeled import UnlabeledFolder
from must.data.readers.video import VideoClips
from must.data.readers.voc import VocDataset
from must.data.readers.world import WorldDataset

__all__ = [
    "FORMATS", "CifarDataset", "CocoDetection", "CocoPanopticSemantic", "CocoStuffSemantic",
    "ComposedDataset", "DataError", "DataWarning", "DatasetConfig", "parse_dataset_spec", "DenseFolders",
    "DenseMapSource", "FashionMNIST", "ImageEntry", "ImageFolder", "LabelSource",
    "ReaderDataset", "TargetSource", "UnlabeledFolder", "VideoClips", "VocDataset", "WorldDataset",
    "open_dataset", "open_for_task", "open_images",
]
