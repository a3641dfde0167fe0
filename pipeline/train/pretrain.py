"""``hvd train pretrain``: the student and the teacher heads trained from the stores with the IPV,
BEV and depth losses (docs/METHOD.md sections 5-7). One loop, readable top to bottom.

Runs alone or under ``torchrun`` (one process per GPU, or CPU processes with gloo): DDP averages
gradients; on GPUs the BatchNorms are synchronised (torch has no synchronised BatchNorm on the CPU,
where DDP broadcasts the BatchNorm statistics of rank 0 instead). Checkpoints hold the student, the
heads, the optimiser, the scheduler, the position in the data and the random states, so ``--resume``
continues exactly where a run stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models import frustum
from models.frustum import BEV_SIZE
from models.losses import LossConfig, bev_matched_loss, depth_loss, ipv_loss, ppkt_loss, total
from models.student import Student, StudentConfig, sparse_input
from models.teacher_heads import TeacherHeads, camera_vector
from pipeline.errors import HvdError
from pipeline.train import pretrain_config
from pipeline.train.loop import Loop, rank_world, setup_distributed
from pipeline.train.pretrain_config import NetworkConfig, PretrainConfig
from pipeline.train.pretrain_data import PretrainDataset, Stores, collate, open_stores



class PretrainNet(nn.Module):
    """Student + teacher heads; ``forward`` returns the enabled losses of a batch (so DDP sees one
    forward per step)."""

    def __init__(
        self,
        losses: LossConfig,
        out_hw: tuple[int, int],
        stride: int,
        pca: tuple[torch.Tensor, torch.Tensor] | None,
        *,
        encoder_channels: int = 2048,
        network: NetworkConfig = NetworkConfig(),
    ) -> None:
        super().__init__()
        self.student = Student(StudentConfig(width=network.student_width))
        self.heads = TeacherHeads(in_channels=encoder_channels, bridge_channels=network.bridge_channels, depth_channels=network.depth_channels)
        self.losses, self.out_hw, self.stride = losses, out_hw, stride
        if pca is not None:
            self.register_buffer("pca_mean", pca[0], persistent=False)
            self.register_buffer("pca_components", pca[1], persistent=False)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The groups whose gradient norms are logged (and, when asked for, clipped) separately."""
        return {
            "student_backbone": list(self.student.backbone.parameters()),
            "student_heads": list(self.student.final_1.parameters()) + list(self.student.bev_head.parameters()),
            "decoder": list(self.heads.decoder.parameters()),
            "bridge": list(self.heads.bridge.parameters()),
            "depth_net": list(self.heads.depthnet.parameters()),
        }

    def outputs(self, batch: dict, *, lss: bool | None = None, bev: bool | None = None):
        """(student output, per-point student features, teacher heads' output) of a batch: what the
        losses compare. ``lss``/``bev`` (default: as the enabled losses need) run the depth net and
        pool the teacher's BEV features at the student's occupied columns."""
        device = next(self.parameters()).device
        out = self.student(sparse_input(batch["coords"], [f.to(device) for f in batch["feats"]]))  # coords follow the feats
        point_features = out.voxel_features[batch["inverse"].to(device)]
        pca = (self.pca_mean, self.pca_components) if hasattr(self, "pca_mean") else None
        with torch.no_grad():
            cells = frustum.frustum_cells(self.out_hw, self.stride, batch["img_aug"], batch["intrinsics"], batch["cam_to_lidar"]).to(device)
        camera = camera_vector(batch["intrinsics"], batch["img_aug"], batch["cam_to_ego"]).float().to(device)
        bev = self.losses.bev if bev is None else bev
        lss = (self.losses.bev or self.losses.depth) if lss is None else lss  # the baselines (IPV or PPKT only) skip the depth net and BEV
        index = out.bev_index  # (K, 3) [batch, ix, iy] of the student's occupied columns: the only cells the BEV loss reads
        rows = (index[:, 0] * BEV_SIZE + index[:, 1]) * BEV_SIZE + index[:, 2] if bev else index.new_zeros(0)
        heads = self.heads(batch["features"].to(device), camera, cells, batch["image_batch"].to(device), batch["size"], pca=pca, lss=lss, bev_rows=rows)
        return out, point_features, heads

    def forward(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = next(self.parameters()).device
        out, point_features, heads = self.outputs(batch)
        pairs = (batch["pair_point"].to(device), batch["pair_image"].to(device), batch["pair_pixel"].to(device))
        losses: dict[str, torch.Tensor] = {}
        if self.losses.ipv:
            losses["ipv"] = ipv_loss(point_features, heads.pixel_features, batch["superpixels"].to(device), batch["sp_count"].to(device), *pairs, temperature=self.losses.temperature)
        if self.losses.bev:
            seen = heads.bev.norm(dim=1) > 0  # (K,) cells some frustum point reaches
            losses["bev"] = bev_matched_loss(out.bev_features[seen], heads.bev[seen], max_matches=self.losses.bev_matches, generator=generator, temperature=self.losses.temperature)
        if self.losses.depth:
            losses["depth"] = depth_loss(heads.depth_probs, batch["depth_target"].to(device))
        if self.losses.ppkt:
            losses["ppkt"] = ppkt_loss(point_features, heads.pixel_features, *pairs, n_pairs=self.losses.ppkt_pairs, generator=generator, temperature=self.losses.temperature)
        return losses


def loss_config(settings) -> LossConfig:
    return LossConfig(**settings.model_dump())


def build_net(config: PretrainConfig, stores: Stores) -> PretrainNet:
    """The student and teacher heads, initialised from ``config.run.seed`` (the same seed gives the
    same initial weights whatever losses are switched on), on the teacher cache's grid and basis."""
    teacher = stores.artifacts["teacher_cache"].params
    pca = None
    if teacher.pca_channels:
        tc = stores.open()["teacher_cache"]
        pca = (torch.from_numpy(tc.read_shared("pca_mean")), torch.from_numpy(tc.read_shared("pca_components")))
    torch.manual_seed(config.run.seed)
    return PretrainNet(
        loss_config(config.losses), tuple(teacher.input_size), teacher.output_stride, pca, encoder_channels=teacher.encoder_channels, network=config.model
    )


def load_run(run: Path, stores: Stores):
    """The pretraining network of a run folder (or its checkpoint.pt), in evaluation mode, built on
    ``stores`` (the teacher cache's grid and PCA basis) and its config."""
    from models.checkpoints import load_checkpoint

    path = Path(run) / "checkpoint.pt" if Path(run).is_dir() else Path(run)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not {"student", "heads", "config"} <= set(state):
        raise HvdError(f"{path} is not an `hvd train pretrain` checkpoint (no student, heads and config)")
    try:
        config = PretrainConfig.model_validate(state["config"])
    except ValueError as exc:  # pydantic's ValidationError
        raise HvdError(f"{path}: its config is not a valid pretraining config ({str(exc).splitlines()[0]})") from None
    net = build_net(config, stores)
    try:
        net.student.load_state_dict(state["student"])
        net.heads.load_state_dict(state["heads"])
    except RuntimeError as exc:
        raise HvdError(f"{path}: its networks do not fit this source's teacher cache ({str(exc).splitlines()[0]}); show it with the --source it was trained on") from None
    return net.eval(), config


def train(
    config: PretrainConfig,
    *,
    catalog,
    resume: bool = False,
    on_step: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train; return {"steps", "first": losses of step 1, "last": losses of the last step, "out_dir"}."""
    device = setup_distributed()
    rank, world = rank_world()
    stores: Stores = open_stores(catalog, config.data.source)
    dataset = PretrainDataset(stores, config.data, seed=config.run.seed, input=config.model.input)
    losses = loss_config(config.losses)
    net = build_net(config, stores).to(device)
    if world > 1 and device.type == "cuda":
        from models.minkowski import ME

        net = ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True) if world > 1 else net
    optimiser = torch.optim.SGD(model.parameters(), lr=config.optim.lr, momentum=config.optim.momentum, dampening=config.optim.dampening, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.optim.epochs)
    loop = Loop(config, net=net, model=model, optimiser=optimiser, scheduler=scheduler, device=device, n_examples=len(dataset), tag="pretrain", groups=net.parameter_groups())

    state = loop.resume() if resume else None
    if state is not None:
        net.student.load_state_dict(state["student"])
        net.heads.load_state_dict(state["heads"])
    elif rank == 0:
        pretrain_config.save(config, loop.run_dir / "config.yaml")

    def compute(batch: dict, generator: torch.Generator):
        parts = model(batch, generator)
        return parts, total(parts, losses)

    def weights() -> dict:
        return {"student": net.student.state_dict(), "heads": net.heads.state_dict()}

    def pictures(batch: dict) -> dict:
        from pipeline.train.pictures import training_pictures

        return training_pictures(net, batch)

    return loop.summary(loop.run(dataset, collate, compute, weights=weights, on_step=on_step, pictures=pictures))
