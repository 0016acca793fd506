"""The deployments: ``realnet/all-categories`` (all 36) and ``realnet/category`` (one, or a short list).

``prefect.yaml`` declares the same two for work-pool workers (docker-compose); ``realnet serve``
serves them straight from this machine.
"""

from __future__ import annotations

from flows.pipeline import realnet

DATA_ROOTS = {"mvtec": "/data/mvtec", "visa": "/data/visa", "mpdd": "/data/mpdd", "btad": "/data/btad"}


def deployments() -> list:
    return [
        realnet.to_deployment(
            name="all-categories",
            description="All 36 categories of MVTec-AD, VisA, MPDD and BTAD with the paper profile.",
            parameters={"categories": ["all"], "profile": "paper", "data_roots": DATA_ROOTS},
            tags=["realnet", "all"],
        ),
        realnet.to_deployment(
            name="category",
            description="One category (or a few); the demo category unless told otherwise.",
            parameters={"categories": ["brick"], "profile": "demo"},
            tags=["realnet"],
        ),
    ]


def serve() -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*deployments())
