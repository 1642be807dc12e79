//! dagml
