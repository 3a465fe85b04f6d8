//! Plan's storage tests: every test runs on SQLite, and on PostgreSQL when
//! `OURO_TEST_DATABASE_URL` is set.

mod attachments;
mod items;
mod links;
mod notifications;
mod saved_queries;
