"""Image sources: folders, tensors, photos, Fashion-MNIST and scenes, VOC and COCO."""
