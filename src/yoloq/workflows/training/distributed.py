"""Under torchrun: the process group, and the epoch sampler and loader every rank agrees on."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from yoloq.data import create_train_loader, load_data_config, load_split
from yoloq.data.loaders import collate
from yoloq.errors import YoloqError
from yoloq.workflows.config import QatConfig
from yoloq.workflows.steps import Workspace

# --- distributed: torchrun sets WORLD_SIZE, RANK, LOCAL_RANK -----------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def start_distributed(device: str) -> Distributed:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=torch.device(device))
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return Distributed(torch.distributed.get_rank(), world, torch.device(device))


def stop_distributed(context: Distributed) -> None:
    if context.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# --- the training data ---------------------------------------------------------------------


class EpochSampler(Sampler[int]):
    """`count` image indices per epoch and process, drawn from (seed, epoch) alone: shuffled
    passes over the dataset, as many as needed; process `rank` takes every `world`-th one."""

    def __init__(self, size: int, count: int, seed: int, rank: int = 0, world: int = 1):
        if size <= 0:
            raise YoloqError("no training images")
        self.size, self.count, self.seed, self.rank, self.world = size, count, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        total = self.count * self.world
        passes = -(-total // self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(passes)])
        return iter(order[:total][self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return self.count


def create_qat_loader(config: QatConfig, space: Workspace, context: Distributed) -> DataLoader:
    """`config.iters` augmented batches per epoch (call `set_qat_epoch` before each)."""
    data = load_data_config(config.data)
    if "train" not in data.splits:
        raise YoloqError(f"{config.data}: no 'train' split to fine-tune on")
    train_set = load_split(data, "train", on_bad_data=config.on_bad_data)
    # Only its dataset: the letterboxed, augmented images, seeded per (seed, epoch, image).
    dataset = create_train_loader(
        train_set, space.img_size, config.batch, space.stride, seed=config.seed
    ).dataset
    sampler = EpochSampler(
        len(dataset), config.iters * config.batch, config.seed, context.rank, context.world
    )
    return DataLoader(
        dataset,
        batch_size=config.batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=max(0, config.workers),
        pin_memory=context.device.type == "cuda",
    )


def set_qat_epoch(loader: DataLoader, epoch: int) -> None:
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
