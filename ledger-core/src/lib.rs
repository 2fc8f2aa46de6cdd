//! ledger-core: the domain of paxos-ledger.
//!
//! Accounts, transfers, their result codes, the fixed-size binary codec, and the pure ledger
//! state machine. No I/O, no clock, no randomness: the same inputs always give the same state.
#![deny(missing_docs)]
