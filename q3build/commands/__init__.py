"""The verbs, one module each. Listed explicitly (no discovery): the order is the help order."""

from . import doctor, drift, kernels, make, matrix, model, patches, plan, render, sync, targets

COMMANDS = (sync, patches, targets, plan, render, make, model, kernels, matrix, drift, doctor)
