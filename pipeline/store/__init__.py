"""The store machinery: the data catalog, fingerprints, each store's description of itself, the
per-keyframe row store and the runner that fills it.

Names no stage: the catalog and the runner are given a ``StageTable`` (``store.stage``) by
``pipeline.stages``, so nothing here imports ``pipeline.stages`` or ``pipeline.train``.
"""
