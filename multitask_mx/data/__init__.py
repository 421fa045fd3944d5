"""Reading the data: .lst lists, image files, augmentation, tasks, datasets and loaders."""
