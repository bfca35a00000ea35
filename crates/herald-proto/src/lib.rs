//! herald-proto (placeholder, being written)
