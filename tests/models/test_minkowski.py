"""MinkowskiEngine is installed, imports through models.minkowski, and computes a sparse
convolution that matches a dense reference (the set-up built it correctly, CPU-only)."""

import numpy as np
import torch

from models.minkowski import ME


def test_sparse_conv_matches_dense_reference():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size = 6
    coords = np.unique(rng.integers(0, size, (40, 3)), axis=0)
    feats = torch.randn(len(coords), 2, dtype=torch.float64)
    batched = ME.utils.batched_coordinates([torch.from_numpy(coords).int()])
    sparse = ME.SparseTensor(feats, coordinates=batched)
    conv = ME.MinkowskiConvolution(2, 3, kernel_size=3, dimension=3, bias=False).double()
    out = conv(sparse)

    dense_in = torch.zeros(1, 2, size, size, size, dtype=torch.float64)
    dense_in[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.T
    # ME kernels are (kernel volume, in, out), offsets ordered with the first axis fastest.
    kernel = conv.kernel.detach().reshape(3, 3, 3, 2, 3).permute(4, 3, 2, 1, 0)
    dense_out = torch.nn.functional.conv3d(dense_in, kernel, padding=1)
    out_coords = out.C[:, 1:].long()
    expected = dense_out[0, :, out_coords[:, 0], out_coords[:, 1], out_coords[:, 2]].T
    assert out.F.shape == (len(coords), 3)
    torch.testing.assert_close(out.F, expected)
