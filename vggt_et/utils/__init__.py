"""Leaf helpers every room may use: UserError, argument and path checks, cleanup of temporary files and child
processes, the one atomic file writer, the one table formatter, stage timing and memory readings.

Imports nothing of the package, only the standard library: the generic rooms
(`passes`, `quantizers`, `runtime`) may import it without reaching the application.
"""
