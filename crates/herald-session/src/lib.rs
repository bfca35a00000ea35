//! herald-session (placeholder, being written)
