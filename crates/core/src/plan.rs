//! The dispatch plan: which token goes to which expert, in CSR form sorted by expert.
//!
//! Every router produces one, and everything downstream (kernels, losses, statistics, traces)
//! reads only this plain struct. Assignments of expert `e` are `offsets[e]..offsets[e+1]`;
//! inside an expert they are in ascending token order, so results do not depend on the order
//! in which a router happened to emit them. It is defined in `switchyard-kernels`, the
//! lowest crate that reads it, and is the contract between the routers here and the kernels.

pub use switchyard_kernels::plan::DispatchPlan;
