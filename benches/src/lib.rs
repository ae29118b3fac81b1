//! What the benchmarks share: the CPU workloads (criterion benches and the instruction-count
//! gate run the same code), in-process targets for journey latency, and the minimal server.

pub mod journeys;
pub mod minimal;
pub mod workloads;
