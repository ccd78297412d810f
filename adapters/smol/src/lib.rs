//! procwire adapter (in progress).
