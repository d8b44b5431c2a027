//! Developer-facing commands: the mock backend and the demo (both shipped:
//! tests, benches and `tollgate demo` use them). The bare Pingora hop and
//! the ablation switches exist only with the `bench-tools` feature.

#[cfg(feature = "bench-tools")]
pub mod ablation;
#[cfg(feature = "bench-tools")]
pub mod bare;
pub mod demo;
pub mod mock;
