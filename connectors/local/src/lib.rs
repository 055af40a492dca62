//! Local connectors: `directory` (trigger and output) and `stdout` (output).

pub mod directory;
pub mod stdout;

pub use directory::{DirectoryOutputConfig, DirectoryTriggerConfig};
pub use stdout::{StdoutOutput, StdoutOutputConfig};
