//! Alert rules: the file format, its validation, and the expansion of
//! SLI and burn-rate rules into [`model::Rule`]s.

pub mod model;

pub use model::{Condition, Level, Op, Rule, Severity, Unit};
