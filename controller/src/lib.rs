//! weft-controller as a library, so tests and benchmarks can drive it.
