"""Pictures as arrays: colour maps, overlays, PCA colours, panels and charts (``hvd show``, the
pretraining TensorBoard images, ``hvd eval``'s plots). Every drawing function returns an (H, W, 3)
uint8 array, so tests can read what was drawn; writing a PNG is a thin layer (``draw.write_png``).

Imports numpy, Pillow and matplotlib (Agg canvas, no display) only: no project layer but the base.
"""
