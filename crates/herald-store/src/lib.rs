//! herald-store (placeholder, being written)
