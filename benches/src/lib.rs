//! What the benchmarks share: the child backend and `/proc` readings, the CPU workloads (criterion benches and the instruction-count
//! gate run the same code), in-process targets for journey latency, and the minimal server.

pub mod child;
pub mod journeys;
pub mod minimal;
pub mod workloads;
