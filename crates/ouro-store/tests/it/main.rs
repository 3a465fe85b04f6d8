//! The storage conformance suite: every test runs on SQLite, and on PostgreSQL when
//! `OURO_TEST_DATABASE_URL` is set (CI sets it).

mod conformance;
mod consumers;
mod statistics;
mod webhooks;
