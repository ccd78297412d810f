//! procwire benchmarks (in progress).
