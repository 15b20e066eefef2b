"""The verbs, one module each. Listed explicitly (no discovery): the order is the help order."""

from . import doctor, drift, kernels, make, matrix, model, package, patches, plan, render, sync, targets, verify

COMMANDS = (sync, patches, targets, plan, render, make, package, verify, model, kernels, matrix, drift, doctor)
