"""The verbs, one module each. Listed explicitly (no discovery): the order is the help order."""

from . import doctor, kernels, make, model, patches, plan, render, sync, targets

COMMANDS = (sync, patches, targets, plan, render, make, model, kernels, doctor)
