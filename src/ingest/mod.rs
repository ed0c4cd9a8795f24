//! Ingest (shell): OTLP receivers that read spans into analysis windows.
