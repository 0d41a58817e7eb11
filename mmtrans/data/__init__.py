"""Datasets and transforms; every data set factory returns a `Splits` of dict-returning datasets."""

from mmtrans.data.caption_formats import (
    CaptionRecord,
    read_caption_table,
    read_coco,
    read_flickr8k,
    read_karpathy,
)
from mmtrans.data.caption_scenes import SceneCaptionDataset, scene_caption_splits
from mmtrans.data.captions import CaptionCollate, CaptionDataset, caption_splits, collate_captions
from mmtrans.data.cifar import CifarDataset, cifar_splits
from mmtrans.data.image_folder import ImageFolderDataset, find_images, image_folder_splits
from mmtrans.data.io import load_image
from mmtrans.data.medical_csv import MedicalCsvDataset, medical_csv_splits
from mmtrans.data.medical_io import is_dicom, load_medical_image
from mmtrans.data.samplers import RepeatAugSampler
from mmtrans.data.shapes import CLASSES as SHAPES_CLASSES
from mmtrans.data.shapes import ShapesDataset, shapes_splits
from mmtrans.data.splits import Splits, group_split, stratified_folds, stratified_split
from mmtrans.data.transforms import build_transform, to_tensor

__all__ = [
    "SHAPES_CLASSES",
    "CaptionDataset",
    "CaptionRecord",
    "SceneCaptionDataset",
    "caption_splits",
    "collate_captions",
    "CaptionCollate",
    "read_caption_table",
    "read_coco",
    "read_flickr8k",
    "read_karpathy",
    "scene_caption_splits",
    "CifarDataset",
    "ImageFolderDataset",
    "MedicalCsvDataset",
    "RepeatAugSampler",
    "ShapesDataset",
    "Splits",
    "build_transform",
    "cifar_splits",
    "find_images",
    "group_split",
    "image_folder_splits",
    "is_dicom",
    "load_image",
    "load_medical_image",
    "medical_csv_splits",
    "shapes_splits",
    "stratified_folds",
    "stratified_split",
    "to_tensor",
]
