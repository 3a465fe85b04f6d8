//! Outgoing webhooks (routes and delivery workers).

use crate::AppState;
use crate::registry::Registry;

pub fn register(_reg: &mut Registry) {}

pub fn spawn_workers(_state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
