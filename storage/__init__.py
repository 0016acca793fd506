"""Artifact storage for the RealNet pipeline: keys, the store, Zarr arrays, Parquet tables, checkpoints.

Submodules are imported explicitly (`from storage.store import Store`) so that importing one piece
does not pull in torch or zarr. This package never imports prefect or realnet_core.
"""
