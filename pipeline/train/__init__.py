"""Training from the stores: the pretraining and downstream datasets, augmentation in feature
space, voxelisation, the shared training loop, ``hvd train pretrain``, ``hvd train finetune`` and
``hvd eval``, with their typed configs.

Reads stores through ``pipeline.stages`` (their readers and the catalog) and ``pipeline.store``;
nothing below imports this package.
"""
