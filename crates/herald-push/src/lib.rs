//! herald-push (placeholder, being written)
