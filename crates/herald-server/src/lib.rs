//! herald-server (placeholder, being written)
