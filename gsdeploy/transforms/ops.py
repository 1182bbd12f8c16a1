"""Which traced call targets mean which operation, for F.*, torch.*, Tensor methods and aten ops.

The passes look operations up here instead of comparing targets inline, so a graph from
torch.export (aten ops) and one from symbolic_trace (F.* / methods) meet the same rules.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

aten = torch.ops.aten

CONV_FNS = {torch.conv2d, aten.conv2d.default, aten.conv2d.padding}
CONVOLUTION_FNS = {aten.convolution.default}
LINEAR_FNS = {F.linear, aten.linear.default}
ADDMM_FNS = {aten.addmm.default}
MM_FNS = {aten.mm.default}
F_BATCH_NORM_FNS = {F.batch_norm}
ATEN_BATCH_NORM_FNS = {torch.batch_norm, aten.batch_norm.default}
BN_LEGIT_FNS = {aten._native_batch_norm_legit_no_training.default}
TRANSPOSE_FNS = {aten.t.default, aten.permute.default, torch.t}

# element-wise or per-channel ops that map 0 to 0 (with their default arguments)
ZERO_PRESERVING_FNS = {
    F.relu, torch.relu, aten.relu.default, F.relu6, aten.hardtanh.default, F.hardtanh,
    F.leaky_relu, aten.leaky_relu.default, F.elu, aten.elu.default, F.gelu, aten.gelu.default,
    F.silu, aten.silu.default, torch.tanh, aten.tanh.default, F.hardswish, aten.hardswish.default,
    F.dropout, aten.dropout.default, aten.clone.default, aten.alias.default,
    F.max_pool2d, aten.max_pool2d.default, torch.max_pool2d,
    F.avg_pool2d, aten.avg_pool2d.default,
    F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default,
    F.adaptive_max_pool2d, torch.neg, aten.neg.default, operator.neg,
}
# In-place twins: transforms/inplace.py makes most of them out-of-place first; the ones it must
# leave (writing into a view) still keep channels apart and zeros zero.
ZERO_PRESERVING_FNS |= {torch.relu_, F.relu_, aten.relu_.default, F.hardtanh_, aten.hardtanh_.default,
                        F.leaky_relu_, aten.leaky_relu_.default, F.elu_, aten.elu_.default, aten.silu_.default,
                        aten.hardswish_.default, aten.tanh_.default, aten.neg_.default}
ZERO_PRESERVING_METHODS = {"relu", "tanh", "contiguous", "clone", "float", "neg", "relu_", "tanh_", "neg_"}
# return (values, indices); element 0 is channel-wise and zero-preserving
POOL_WITH_INDICES_FNS = {aten.max_pool2d_with_indices.default, aten.adaptive_max_pool2d.default}
# element-wise ops that keep channels separate but do not map 0 to 0
NOT_ZERO_PRESERVING_FNS = {torch.sigmoid, aten.sigmoid.default, F.sigmoid, torch.exp, aten.exp.default,
                           F.hardsigmoid, aten.hardsigmoid.default}
NOT_ZERO_PRESERVING_FNS |= {torch.sigmoid_, aten.sigmoid_.default, aten.exp_.default, aten.hardsigmoid_.default}
NOT_ZERO_PRESERVING_METHODS = {"sigmoid", "exp", "sigmoid_", "exp_"}

ADD_FNS = {operator.add, operator.iadd, torch.add, aten.add.Tensor, operator.sub, operator.isub, torch.sub,
           aten.sub.Tensor, aten.add_.Tensor, aten.sub_.Tensor}
ADD_METHODS = {"add", "sub", "add_", "sub_"}
MUL_FNS = {operator.mul, operator.imul, torch.mul, aten.mul.Tensor, aten.mul_.Tensor}
MUL_METHODS = {"mul", "mul_"}
DIV_FNS = {operator.truediv, operator.itruediv, torch.div, aten.div.Tensor, aten.div_.Tensor}
DIV_METHODS = {"div", "div_"}
CAT_FNS = {torch.cat, aten.cat.default, torch.concat, torch.concatenate}
PAD_FNS = {F.pad, aten.constant_pad_nd.default, aten.pad.default}
FLATTEN_FNS = {torch.flatten, aten.flatten.using_ints}
FLATTEN_METHODS = {"flatten"}
MEAN_FNS = {torch.mean, aten.mean.dim}
MEAN_METHODS = {"mean"}
RESHAPE_FNS = {torch.reshape, aten.view.default, aten.reshape.default, aten._unsafe_view.default}
RESHAPE_METHODS = {"view", "reshape"}
# attributes that read no tensor data (y.shape feeding a view)
METADATA_ATTRS = {"shape", "dtype", "device", "ndim"}


def is_fn(node: fx.Node, fns: set, methods: set[str] | None = None) -> bool:
    if node.op == "call_function":
        try:
            return node.target in fns
        except TypeError:  # unhashable target
            return False
    if node.op == "call_method" and methods is not None:
        return node.target in methods
    return False
