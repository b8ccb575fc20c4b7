//! Who is on call, and whom a page escalates to: the roster file
//! ([`roster`]), weekly rotations that hand over at local wall time
//! ([`rotation`]), and the escalation schedule of a page ([`escalation`]).
//!
//! Pure logic over plain types: the only I/O is [`Roster::load`] reading
//! the file, and every function that depends on time takes the instant as a
//! parameter, so the engine (and its tests) control the clock.

pub mod escalation;
pub mod model;
pub mod roster;
pub mod rotation;

pub use escalation::{Step, Target, due, plan, targets};
pub use model::{Policy, Selector};
pub use roster::{Override, Person, Place, Role, Roster, RosterError};
pub use rotation::{Rotation, RotationError, Shift};
