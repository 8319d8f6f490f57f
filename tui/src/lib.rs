//! The `agenfleet` client as a library: the console (`app` state, `ui` drawing, the `tui`
//! event loop), the command line (`cli`) and the daemon connection (`client`). The binary
//! (`main.rs`) is a thin start; the library exists so benches can drive the console's
//! state and drawing with a synthetic fleet.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod contexts;
pub mod fmt;
pub mod pins;
pub mod policy_cases;
pub mod pulse;
pub mod tui;
pub mod ui;
