"""Datasets and transforms; every data set factory returns a `Splits` of dict-returning datasets."""

from mmtrans.data.cifar import CifarDataset, cifar_splits
from mmtrans.data.image_folder import ImageFolderDataset, find_images, image_folder_splits
from mmtrans.data.io import load_image
from mmtrans.data.shapes import CLASSES as SHAPES_CLASSES
from mmtrans.data.shapes import ShapesDataset, shapes_splits
from mmtrans.data.splits import Splits, stratified_split
from mmtrans.data.transforms import build_transform, to_tensor

__all__ = [
    "SHAPES_CLASSES",
    "CifarDataset",
    "ImageFolderDataset",
    "ShapesDataset",
    "Splits",
    "build_transform",
    "cifar_splits",
    "find_images",
    "image_folder_splits",
    "load_image",
    "shapes_splits",
    "stratified_split",
    "to_tensor",
]
