"""The benchmarks, one module each behind `problem.Benchmark`; `registry` names them."""
