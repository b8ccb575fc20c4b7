//! Alert rules: the file format, its validation, and the expansion of
//! SLI and burn-rate rules into [`model::Rule`]s.

pub mod burn;
pub mod file;
pub mod model;
pub mod sli;

pub use file::{RuleSet, RulesError, load, parse, shipped};
pub use model::{Condition, Grouping, InhibitRule, Level, Op, Rule, Severity, Unit};
