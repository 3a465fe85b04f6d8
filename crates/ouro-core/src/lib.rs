//! Ouro's shared vocabulary. Every other crate depends on this one and it depends on no other
//! Ouro crate: ids and names, time, roles, the table of event kinds and the table of error codes.

pub mod error;
pub mod events;
pub mod ids;
pub mod refs;
pub mod role;
pub mod time;

pub use error::{ErrorCode, OuroError, Result};
pub use events::{Actor, Event, EventKind, NewEvent, Subject};
pub use role::{Permission, Role};
