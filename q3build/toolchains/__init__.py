"""Toolchains: resolving a recipe's compiler, cross emulation, kernel tests under it."""
