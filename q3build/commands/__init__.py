"""The verbs, one module each. Listed explicitly (no discovery): the order is the help order."""

from . import bench, doctor, drift, kernels, make, matrix, model, package, patches, plan, render, sync, targets, verify

COMMANDS = (sync, patches, targets, plan, render, make, package, verify, model, bench, kernels, matrix, drift, doctor)
