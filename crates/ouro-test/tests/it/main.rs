//! The report parsers against real producers' output (fixtures in tests/fixtures/<producer>/).

mod coverage;
mod errors;
mod junit;
mod results;
