"""The pass@k harness: problems, generation, sandboxed execution, metrics."""
