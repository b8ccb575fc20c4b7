//! Plain types and rules of the booking domain. Nothing here does I/O, so each
//! rule can be read and tested on its own.

pub mod client_ip;
pub mod clock;
pub mod money;
pub mod queue;
pub mod rate_limit;
pub mod tokens;

pub use clock::Clock;
pub use money::Won;
