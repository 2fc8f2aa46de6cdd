//! What the cluster puts in a Paxos entry and in a read, and what comes back.
//!
//! ```text
//! command entry  = version u8 | nonce u128 | ledger_core::Command bytes
//! command reply  = status u8 | ledger_core::Reply bytes         (status: applied / replayed)
//! read           = 1 | ledger_core::Query bytes,  or  2 (a digest),  or  3 (unresolved legs)
//! read reply     = ledger_core::QueryReply bytes,  or  slot u64 | digest u64,
//!                  or  ledger time u64 | ledger_core::QueryReply bytes (unresolved legs)
//! ```
//!
//! The nonce names one client entry forever; a retry carries the same bytes, so the state
//! machine recognises it (see [`crate::reply_cache`]). All decoders check lengths before they
//! allocate and return `None` on hostile bytes, never panic.

use bytes::{BufMut, Bytes, BytesMut};
use ledger_core::{Command, Query, QueryReply, TRANSFER_SIZE_BYTES, Transfer};

use crate::reply_cache::Reader;

/// The version byte of a command entry.
pub const COMMAND_VERSION: u8 = 1;

/// How the state machine produced a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyStatus {
    /// The entry was applied now.
    Applied = 0,
    /// The entry's nonce had been applied before: this is the original reply (a retry).
    Replayed = 1,
    /// The entry could not be decoded and changed nothing.
    Malformed = 2,
}

impl ReplyStatus {
    fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Applied),
            1 => Some(Self::Replayed),
            2 => Some(Self::Malformed),
            _ => None,
        }
    }
}

/// Encodes a command entry.
pub fn encode_command(nonce: u128, command: &Command) -> Bytes {
    let mut out = Vec::with_capacity(17 + 8 + command.event_count() * TRANSFER_SIZE_BYTES);
    out.push(COMMAND_VERSION);
    out.extend_from_slice(&nonce.to_le_bytes());
    command.encode(&mut out);
    Bytes::from(out)
}

/// Splits a command entry into its nonce and command bytes; `None` if malformed.
pub fn decode_command_envelope(bytes: &[u8]) -> Option<(u128, &[u8])> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != COMMAND_VERSION {
        return None;
    }
    let nonce = reader.u128()?;
    Some((nonce, reader.rest()))
}

/// Encodes a command reply.
pub fn encode_reply(status: ReplyStatus, reply: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + reply.len());
    out.put_u8(status as u8);
    out.put_slice(reply);
    out.freeze()
}

/// Splits a command reply into its status and ledger-core reply bytes.
pub fn decode_reply_envelope(bytes: &[u8]) -> Option<(ReplyStatus, &[u8])> {
    let (&status, rest) = bytes.split_first()?;
    Some((ReplyStatus::from_u8(status)?, rest))
}

/// A linearizable read of one shard: a ledger query, or the replica's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A ledger-core query (lookups, history, balances).
    Ledger(Query),
    /// The applied slot and the state digest of the replica that answers.
    Digest,
    /// The cross-shard legs the shard holds unresolved (for the resolver), with the shard's
    /// ledger time (see [`encode_unresolved`]).
    Unresolved,
}

const READ_LEDGER: u8 = 1;
const READ_DIGEST: u8 = 2;
const READ_UNRESOLVED: u8 = 3;

impl Read {
    /// Encodes the read.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            Self::Ledger(query) => {
                out.push(READ_LEDGER);
                query.encode(&mut out);
            }
            Self::Digest => out.push(READ_DIGEST),
            Self::Unresolved => out.push(READ_UNRESOLVED),
        }
        Bytes::from(out)
    }

    /// Decodes a read; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&kind, body) = bytes.split_first()?;
        match kind {
            READ_LEDGER => Query::decode(body).ok().map(Self::Ledger),
            READ_DIGEST if body.is_empty() => Some(Self::Digest),
            READ_UNRESOLVED if body.is_empty() => Some(Self::Unresolved),
            _ => None,
        }
    }
}

/// Encodes a query reply.
pub fn encode_query_reply(reply: &QueryReply) -> Bytes {
    let mut out = Vec::new();
    reply.encode(&mut out);
    Bytes::from(out)
}

/// Encodes the answer to [`Read::Unresolved`]: the shard's ledger time (the timestamp of the
/// last event it applied, in nanoseconds), then the entries as a query reply.
pub fn encode_unresolved(ledger_now: u64, entries: Vec<Transfer>) -> Bytes {
    let mut out = ledger_now.to_le_bytes().to_vec();
    QueryReply::Transfers(entries).encode(&mut out);
    Bytes::from(out)
}

/// Decodes the answer to [`Read::Unresolved`]: the shard's ledger time and the entries; `None`
/// if malformed.
pub fn decode_unresolved(bytes: &[u8]) -> Option<(u64, Vec<Transfer>)> {
    let mut reader = Reader::new(bytes);
    let ledger_now = reader.u64()?;
    match QueryReply::decode(reader.rest()).ok()? {
        QueryReply::Transfers(entries) => Some((ledger_now, entries)),
        _ => None,
    }
}

/// Encodes a digest reply.
pub fn encode_digest(applied_slot: u64, digest: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    out.put_u64_le(applied_slot);
    out.put_u64_le(digest);
    out.freeze()
}

/// Decodes a digest reply.
#[cfg(test)]
pub fn decode_digest(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut reader = Reader::new(bytes);
    let pair = (reader.u64()?, reader.u64()?);
    reader.is_empty().then_some(pair)
}
