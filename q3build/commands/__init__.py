"""The verbs, one module each. Listed explicitly (no discovery): the order is the help order."""

from q3build.commands import (
            bench,
            doctor,
            drift,
            kernels,
            make,
            matrix,
            model,
            package,
            patches,
            plan,
            render,
            sync,
            targets,
            validate,
            verify,
)

COMMANDS = (sync, patches, targets, plan, render, make, validate, package, verify, model, bench, kernels,
            matrix, drift, doctor)
