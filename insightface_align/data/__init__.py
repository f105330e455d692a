"""Records and batches: RecordIO layout, augmentation, targets and the training iterator."""
