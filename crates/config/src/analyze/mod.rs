//! Analyzers across resources (placeholder module filled in below).
