//! The report parsers against real producers' output (fixtures in tests/fixtures/<producer>/).

mod junit;
mod results;
