"""Pipeline stages: plain functions over the artifact store, no Prefect. See ``stages.dag``."""
