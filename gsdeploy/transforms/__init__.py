"""Graph passes on torch.fx that make group-sparsity compression real, the planner, verify().

deploy(module, input_shape, options) -> DeployResult is the entry point; verify_modules and
compare_outputs are reused by the export checks; trace gives the GraphModule the passes edit.
"""

from gsdeploy.transforms.plan import ACTIONS, Decision, DeployOptions, DeployResult, Verification
from gsdeploy.transforms.planner import deploy
from gsdeploy.transforms.trace import TraceError, trace
from gsdeploy.transforms.verify import compare_outputs, verify_modules

__all__ = ["ACTIONS", "Decision", "DeployOptions", "DeployResult", "TraceError", "Verification", "compare_outputs",
           "deploy", "trace", "verify_modules"]
