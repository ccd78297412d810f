//! The conformance suite on procwire-tokio (a two-worker multi-threaded runtime per test).

procwire_conformance::suite!(procwire_conformance::adapters::run_tokio);
