//! Release phase tests on both databases (one module per area).

mod environments;
mod gates;
mod promotions;
mod schema;
