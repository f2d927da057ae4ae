"""What the project's compute backend is and, on Ray, the cluster it reaches (``posttrain compute status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from posttrain.project import Project


class Node(BaseModel):
    """One node of the Ray cluster."""

    node_id: str
    address: str
    alive: bool
    head: bool
    cpus: float
    gpus: float


class ComputeStatus(BaseModel):
    """The backend the heavy stages use, and the cluster's nodes when it is Ray."""

    backend: Literal["local", "ray"]
    address: str | None
    storage: str
    workers: int
    nodes: list[Node]
    cpus: float
    gpus: float


def status(project: Project) -> ComputeStatus:
    """Return the compute backend; on Ray, connect (raising Unavailable when no cluster answers) and list its nodes."""
    from posttrain.compute import storage, uses_ray

    settings = project.settings.compute
    where = storage(project).url_root
    if not uses_ray(project):
        return ComputeStatus(backend="local", address=None, storage=where, workers=1, nodes=[], cpus=0, gpus=0)
    from posttrain.compute.ray_runtime import connect

    ray = connect(settings)
    nodes = [
        Node(
            node_id=n["NodeID"],
            address=n.get("NodeManagerAddress", ""),
            alive=bool(n.get("Alive")),
            head="node:__internal_head__" in n.get("Resources", {}),
            cpus=n.get("Resources", {}).get("CPU", 0.0),
            gpus=n.get("Resources", {}).get("GPU", 0.0),
        )  # fmt: skip
        for n in ray.nodes()
    ]
    alive = [n for n in nodes if n.alive]
    return ComputeStatus(
        backend="ray", address=settings.address, storage=where, workers=settings.workers, nodes=nodes,
        cpus=sum(n.cpus for n in alive), gpus=sum(n.gpus for n in alive),
    )  # fmt: skip
