"""The ``hvd`` command-line tool."""
