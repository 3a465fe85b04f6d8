//! Integration tests: the real server, in-process on port 0, over real HTTP. Each test runs on
//! SQLite and, when `OURO_TEST_DATABASE_URL` is set, on PostgreSQL.

mod api;
mod attachments;
mod boards_sprints;
mod browser;
mod change_requests;
mod change_requests_ui;
mod code_browse;
mod code_hosting;
mod code_mirrors;
mod cr_meta;
mod cr_threads;
mod csv;
mod drift;
mod events;
mod guard;
mod items;
mod links_rules;
mod merge_rules;
mod meta;
mod notify;
mod pipelines;
mod plan_config;
mod plan_settings_ui;
mod plan_ui;
mod props;
mod push_rules;
mod runners;
mod saved_queries;
mod support;
mod ui_auth;
mod ui_pages;
mod webhooks;
