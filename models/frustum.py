"""Camera geometry of the BEV branch: where a pixel of an augmented image, at a given depth, lies
in the augmented LiDAR frame, and which BEV cell that is. Shared by the data augmentation
(``pipeline.train.augment``), the LSS lift (``models.lss``) and the student's BEV head, so the
camera and LiDAR branches agree by construction (docs/METHOD.md section 3, "ours").

Conventions:
- pixel coordinates (u, v) = (column, row), pixel centres at integers;
- an image augmentation is a 3x3 affine matrix ``img_aug`` mapping original pixels to augmented ones;
- ``cam_to_lidar_aug`` (4x4) = lidar_aug @ ego_to_lidar @ global_to_ego(t_lidar) @ ego_to_global(t_cam)
  @ cam_to_ego: the camera frame at its exposure time into the augmented LiDAR frame at the sweep time;
- depth is the camera-frame z (what the pairings store and the depth bins discretise).
"""

from __future__ import annotations

import numpy as np
import torch

BEV_CELL_M = 0.4
BEV_SIZE = 256  # cells per side: x, y in [-51.2, 51.2)
BEV_Z_RANGE_M = (-10.0, 10.0)
VOXEL_SIZE_M = 0.1
BEV_STRIDE_VOXELS = (4, 4, 80)
DEPTH_MIN_M, DEPTH_MAX_M, DEPTH_STEP_M = 1.0, 60.0, 0.5
N_DEPTH_BINS = int(round((DEPTH_MAX_M - DEPTH_MIN_M) / DEPTH_STEP_M))  # 118


def _inv(m):
    return torch.linalg.inv(m) if isinstance(m, torch.Tensor) else np.linalg.inv(m)


def cam_to_lidar_aug(lidar_aug, lidar_to_ego, ego_to_global_lidar, ego_to_global_cam, cam_to_ego):
    """(..., 4, 4) for each camera: broadcasting over leading dimensions (numpy or torch)."""
    return lidar_aug @ _inv(lidar_to_ego) @ _inv(ego_to_global_lidar) @ ego_to_global_cam @ cam_to_ego


def depth_bins(dtype=torch.float32, device=None) -> torch.Tensor:
    """(D,) depths the LSS lifts to: the lower edge of each bin, 1.0, 1.5, ..., 59.5 m."""
    return DEPTH_MIN_M + DEPTH_STEP_M * torch.arange(N_DEPTH_BINS, dtype=dtype, device=device)


def depth_bin_index(depth_m: torch.Tensor) -> torch.Tensor:
    """Bin j = floor((d - 1.0) / 0.5) of each depth; -1 where outside [1.0, 60.0) or no depth (0)."""
    j = torch.floor((depth_m - DEPTH_MIN_M) / DEPTH_STEP_M).long()
    return torch.where((j >= 0) & (j < N_DEPTH_BINS) & (depth_m > 0), j, torch.full_like(j, -1))


def feature_pixel_centres(image_hw: tuple[int, int], stride: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(h, w, 2) augmented-image (u, v) of the centre of each feature cell: cell (i, j) covers
    pixels [stride*j, stride*(j+1)) x [stride*i, stride*(i+1)), centre stride*j + (stride-1)/2."""
    h, w = image_hw[0] // stride, image_hw[1] // stride
    v = stride * torch.arange(h, dtype=dtype, device=device) + (stride - 1) / 2
    u = stride * torch.arange(w, dtype=dtype, device=device) + (stride - 1) / 2
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def pixel_rays(uv_aug: torch.Tensor, img_aug: torch.Tensor, intrinsic: torch.Tensor, cam_to_lidar: torch.Tensor) -> torch.Tensor:
    """(..., 3) direction, in the augmented LiDAR frame, of the camera ray through augmented pixels
    ``uv_aug`` (..., 2), scaled so that camera depth d lies at ``origin + d * ray``. The matrices
    broadcast against the leading dimensions: (..., 3, 3) and (..., 4, 4), inverted once each."""
    back = torch.linalg.inv(intrinsic) @ torch.linalg.inv(img_aug)  # augmented pixel -> camera ray
    pix = torch.cat([uv_aug, torch.ones_like(uv_aug[..., :1])], dim=-1)
    ray_cam = (back @ pix.unsqueeze(-1)).squeeze(-1)
    return (cam_to_lidar[..., :3, :3] @ ray_cam.unsqueeze(-1)).squeeze(-1)


def unproject(uv_aug: torch.Tensor, depth: torch.Tensor, img_aug: torch.Tensor, intrinsic: torch.Tensor, cam_to_lidar: torch.Tensor) -> torch.Tensor:
    """Augmented-LiDAR-frame xyz (..., 3) of augmented pixels ``uv_aug`` (..., 2) at camera depth
    ``depth`` (...,): the inverse of the pairing projection followed by both augmentations."""
    ray = pixel_rays(uv_aug, img_aug, intrinsic, cam_to_lidar)
    return cam_to_lidar[..., :3, 3] + depth.unsqueeze(-1) * ray


def bev_cell(xyz: torch.Tensor) -> torch.Tensor:
    """(..., 2) BEV cell (ix, iy) of augmented-LiDAR points: ix = floor(x / 0.4) + 128, likewise y;
    -1 in both where outside the 256 x 256 grid or the z range."""
    ixy = torch.floor(xyz[..., :2] / BEV_CELL_M).long() + BEV_SIZE // 2
    ok = (ixy >= 0).all(-1) & (ixy < BEV_SIZE).all(-1) & (xyz[..., 2] >= BEV_Z_RANGE_M[0]) & (xyz[..., 2] < BEV_Z_RANGE_M[1])
    return torch.where(ok.unsqueeze(-1), ixy, torch.full_like(ixy, -1))


def voxel_bev_cell(voxel_xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) BEV cell of integer voxel coordinates (x, y) at 0.1 m: floor(c / 4) + 128, which equals
    ``bev_cell`` of any point in the voxel (floor(floor(x / 0.1) / 4) = floor(x / 0.4))."""
    return torch.div(voxel_xy, BEV_STRIDE_VOXELS[0], rounding_mode="floor") + BEV_SIZE // 2


def frustum_cells(image_hw: tuple[int, int], stride: int, img_aug: torch.Tensor, intrinsic: torch.Tensor, cam_to_lidar: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) flat BEV cell index ix * 256 + iy of every frustum point (feature-cell centre at
    each depth bin) of N cameras (matrices (N, 3, 3), (N, 4, 4)); -1 outside the grid."""
    dtype, device = cam_to_lidar.dtype, cam_to_lidar.device
    centres = feature_pixel_centres(image_hw, stride, dtype=dtype, device=device)  # (h, w, 2)
    n = img_aug.shape[0]
    rays = pixel_rays(centres.unsqueeze(0), img_aug.view(n, 1, 1, 3, 3), intrinsic.view(n, 1, 1, 3, 3), cam_to_lidar.view(n, 1, 1, 4, 4))
    depths = depth_bins(dtype=dtype, device=device).view(1, -1, 1, 1, 1)
    pts = cam_to_lidar[:, :3, 3].view(n, 1, 1, 1, 3) + depths * rays.unsqueeze(1)  # (N, D, h, w, 3)
    cell = bev_cell(pts)
    return torch.where(cell[..., 0] >= 0, cell[..., 0] * BEV_SIZE + cell[..., 1], torch.full_like(cell[..., 0], -1))
