"""`fineked run --ray [ADDRESS] --workers N`: the batches of a single/batch/subject run sharded over Ray actors.

- Each actor (`CaseWorker`) holds one model replica and a `harness.runner.Run` without a run folder; it edits,
  evaluates and restores whole batches (`Run.edit_batch`) and returns their result lines. On a cluster with GPUs
  each actor has `num_gpus=1`; otherwise it runs on one CPU with one torch thread.
- The driver holds no model. It is an ordinary `Run.execute` whose batches come back from the actors in any
  order (`ray.util.ActorPool.map_unordered`), so results.jsonl, the manifest, the summary, the lock and resuming
  are those of a one-process run (harness.rundir): a line is written once its batch is done, and rerunning after
  the driver was killed does only the cases with no line.
- Shared work is done once: the first actor computes the pre-edit predictions (shipped to the others through
  the object store) and edits the first batch alone, which fills the disk caches (layer statistics, context
  prefixes, AlphaEdit's projector, the KRD's load); the other actors start after it and read them.
  On several machines, put FINEKED_CACHE on a shared filesystem, or each machine computes them once itself.
- Faults: actors are restarted by Ray (`max_restarts`) and a task whose actor died is retried by Ray on the new
  actor process (`max_task_retries`): the case runs again from the unedited model, with its own seed.
- Sequential runs refuse more than one worker: each edit depends on the ones before.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Sequence

from harness.errors import UserError

log = logging.getLogger(__name__)

SHARDABLE_MODES = ("single", "batch", "subject")
MAX_RESTARTS = 3  # per actor: a worker killed mid-case comes back this many times, its task retried each time
# what the actors need from the driver's environment (a cluster started elsewhere does not have it)
FORWARDED_ENV = ("FINEKED_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "PYTHONPATH")


def check_ray_args(mode: str, ray_address: str | None, workers: int | None) -> None:
    """One-line errors for flags that cannot work together, before anything is loaded."""
    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    if mode == "sequential" and (workers or 1) > 1:
        raise UserError("--mode sequential edits depend on one another, so they cannot be sharded; "
                        "drop --workers (or use --mode single/batch/subject)")
    if mode == "sequential" and ray_address is not None:
        raise UserError("--mode sequential runs in one process; drop --ray")
    if workers is not None and workers > 1 and ray_address is None:
        raise UserError("--workers N shards cases over Ray actors; add --ray (a local Ray) or --ray ADDRESS")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the optional extra: pip install 'fineked-suite[ray]' "
                        "(or pip install ray==2.60.0)") from None
    return ray


def connect(address: str, workers: int, quiet: bool) -> bool:
    """Join the cluster at `address` ("auto": the one `ray start` made here), or start a local Ray with one CPU
    per worker ("local"). Returns whether this call started Ray (and so must shut it down)."""
    ray = import_ray()
    if ray.is_initialized():  # an embedding program (or a test) already joined a cluster
        return False
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=not quiet)
    else:
        try:
            ray.init(address=address, log_to_driver=not quiet)
        except ConnectionError as exc:
            raise UserError(f"cannot reach a Ray cluster at --ray {address} ({exc}); start one with "
                            "`ray start --head`, or give no address for a local Ray") from None
    return True


def worker_resources(ray: Any, device: str | None) -> tuple[str, dict[str, Any]]:
    """(device kind for the actors, their resources): a GPU each where the cluster has GPUs, else one CPU."""
    gpus = ray.cluster_resources().get("GPU", 0)
    kind = (device or ("cuda" if gpus else "cpu")).split(":")[0]
    if kind == "cuda":
        if not gpus:
            raise UserError(f"--device {device}: the Ray cluster has no GPU; use --device cpu")
        return "cuda", {"num_gpus": 1, "num_cpus": 1}
    if kind != "cpu":
        raise UserError(f"unknown --device {device!r}; use cpu or cuda (Ray gives each actor its own GPU)")
    return "cpu", {"num_cpus": 1}


class CaseWorker:
    """One model replica and a Run over it; `ray.remote` wraps this class in `run_on_ray` (ray is optional)."""

    def __init__(self, run_kwargs: dict[str, Any], model_name: str, device: str, dtype: str,
                 pre: dict[str, Any] | None) -> None:
        import torch

        from harness.commands import load_named_model
        from harness.runner import Run

        if device == "cpu":
            torch.set_num_threads(1)  # one CPU per actor: more threads would fight over it
        # An actor whose constructor raises just dies, with its error as text; a method's error comes back to the
        # driver as itself (RayTaskError.cause), so a bad model name or too long a prompt is kept for placement().
        self.error: Exception | None = None
        try:
            model, tok, key = load_named_model(model_name, device, dtype)
            self.run = Run(model=model, tok=tok, model_key=key, **run_kwargs)  # quiet: no bars, editors' too
            self.run.prepare(pre)
            self.by_id = {r.case_id: r for r in self.run.records()}
        except Exception as exc:
            self.error = exc

    def placement(self) -> tuple[str, dict[str, Any]]:
        if self.error is not None:
            raise self.error
        return self.run.placement_of()

    def pre_edit(self) -> dict[str, Any]:
        return self.run.pre

    def edit_batch(self, case_ids: Sequence[str]) -> list[dict[str, Any]]:
        return self.run.edit_batch([self.by_id[c] for c in case_ids])


def run_on_ray(run: Any, model_name: str, device: str | None, dtype: str, address: str, workers: int) -> dict:
    """Execute `run` (a harness.runner.Run made with model=None) with its batches on `workers` Ray actors."""
    ray = import_ray()
    from ray.util import ActorPool

    started = connect(address, workers, run.quiet)
    try:
        kind, resources = worker_resources(ray, device)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        Worker = ray.remote(CaseWorker).options(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                                                runtime_env={"env_vars": env}, **resources)
        run_kwargs = dict(config=run.config, dataset=run.dataset, out=run.out, limit=run.limit, quiet=True,
                          check_restore=run.check_restore, command=run.command, pre_edit_cache=run.pre_edit_cache,
                          vstar_cache=run.vstar_cache)
        first = Worker.remote(run_kwargs, model_name, kind, dtype, None)  # computes the pre-edit predictions
        try:
            run.placement = ray.get(first.placement.remote())
            pre = ray.get(first.pre_edit.remote())
        except ray.exceptions.RayError as exc:
            raise worker_error(exc) from None
        pre_ref = ray.put(pre)
        actors = [first]

        def run_batches(batches: Sequence[Sequence[Any]]) -> Iterator[list[dict[str, Any]]]:
            if not batches:
                return
            ids = [[r.case_id for r in b] for b in batches]
            try:
                # the first batch alone, on the first actor: it fills the disk caches the others then read
                yield ray.get(first.edit_batch.remote(ids[0]))
                actors.extend(Worker.remote(run_kwargs, model_name, kind, dtype, pre_ref)
                              for _ in range(min(workers, len(ids)) - 1))
                pool = ActorPool(actors)
                yield from pool.map_unordered(lambda actor, b: actor.edit_batch.remote(b), ids[1:])
            except ray.exceptions.RayError as exc:
                raise worker_error(exc) from None

        run.model = None
        run.prepare(pre)  # the plan and the companions, as the actors have them
        return run.execute(run_batches)
    finally:
        if started:
            ray.shutdown()


def worker_error(exc: Exception) -> Exception:
    """The user's error inside an actor (unknown editor, bad hparam) as itself, so the CLI shows one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):
        return cause
    return RuntimeError(f"a Ray worker failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}")
