"""Graph passes on torch.fx that make group-sparsity compression real, deploy(), verify().

deploy(module, input_shape, options) -> DeployResult is the entry point (Deployer: one model
deployed under several fuse modes or plan choices, sharing the work they have in common); verify_modules runs a
candidate against its reference (outputs compared by gsdeploy.numerics); trace gives the
GraphModule the passes edit.
"""

from gsdeploy.transforms.decisions import ACTIONS, Decision, DeployOptions, DeployResult
from gsdeploy.transforms.deployment import Deployer, deploy
from gsdeploy.transforms.trace import TraceError, trace
from gsdeploy.transforms.verify import verify_modules

__all__ = ["ACTIONS", "Decision", "DeployOptions", "DeployResult", "Deployer", "TraceError", "deploy", "trace", "verify_modules"]
