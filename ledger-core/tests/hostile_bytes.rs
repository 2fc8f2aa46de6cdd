//! Every decoder fed random bytes and mutated valid encodings returns a value or an error —
//! never a panic, never an allocation beyond the input's size — and a damaged snapshot is
//! always rejected.

use ledger_core::{
    Account, AccountBalance, AccountFilter, AccountFlags, Command, Ledger, Query, QueryReply,
    Reply, Transfer, TransferFlags,
};
use proptest::prelude::*;

/// Feeds `bytes` to every decoder; the answers themselves are not the point, surviving is.
fn decode_everything(bytes: &[u8]) {
    let _ = Account::decode(bytes);
    let _ = Transfer::decode(bytes);
    let _ = AccountBalance::decode(bytes);
    let _ = AccountFilter::decode(bytes);
    let _ = Command::decode(bytes);
    let _ = Reply::decode(bytes);
    let _ = Query::decode(bytes);
    let _ = QueryReply::decode(bytes);
    if let Ok(ledger) = Ledger::decode_snapshot(bytes) {
        // Whatever decodes must be a consistent ledger that keeps working.
        assert_eq!(ledger.check_invariants(), Ok(()));
        let mut ledger = ledger;
        let _ = ledger.create_transfers(&[Transfer::new(1, 1, 2, 1, 1, 1)], 0);
    }
}

/// A ledger exercising every part of the snapshot format.
fn busy_ledger() -> Ledger {
    let mut ledger = Ledger::new();
    let history = Account {
        flags: AccountFlags::HISTORY,
        ..Account::new(3, 1, 1)
    };
    ledger.create_accounts(&[Account::new(1, 1, 1), Account::new(2, 1, 1), history], 10);
    let pending = TransferFlags::PENDING;
    ledger.create_transfers(
        &[
            Transfer::new(10, 1, 2, 5, 1, 1),
            Transfer {
                flags: pending,
                timeout: 60,
                ..Transfer::new(11, 1, 3, 7, 1, 1)
            },
            Transfer {
                flags: pending,
                ..Transfer::new(12, 2, 3, 9, 1, 1)
            },
            Transfer {
                pending_id: 12,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                amount: 4,
                ..Transfer::default()
            },
            Transfer::new(13, 1, 99, 1, 1, 1), // burns id 13
        ],
        20,
    );
    ledger
}

fn encodings() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let transfers = vec![Transfer::new(1, 2, 3, 4, 5, 6); 3];
    for command in [
        Command::CreateAccounts(vec![Account::new(1, 2, 3)]),
        Command::CreateTransfers(transfers.clone()),
    ] {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        out.push(bytes);
    }
    let mut ledger = busy_ledger();
    let mut bytes = Vec::new();
    ledger
        .apply(&Command::CreateTransfers(transfers), 30)
        .encode(&mut bytes);
    out.push(bytes);
    for query in [
        Query::LookupAccounts(vec![1, 2]),
        Query::GetAccountTransfers(AccountFilter::new(1, 9)),
    ] {
        let mut bytes = Vec::new();
        query.encode(&mut bytes);
        out.push(bytes);
    }
    let mut bytes = Vec::new();
    ledger
        .query(&Query::LookupTransfers(vec![10, 11]))
        .encode(&mut bytes);
    out.push(bytes);
    out.push(ledger.encode_snapshot());
    out
}

#[test]
fn the_busy_snapshot_round_trips() {
    let ledger = busy_ledger();
    let bytes = ledger.encode_snapshot();
    let restored = Ledger::decode_snapshot(&bytes).unwrap();
    assert_eq!(restored.encode_snapshot(), bytes);
    assert_eq!(
        restored.lookup_transfers(&[11]),
        ledger.lookup_transfers(&[11])
    );
}

#[test]
fn every_damaged_snapshot_is_rejected() {
    let bytes = busy_ledger().encode_snapshot();
    // CRC32 catches every single-bit flip and every truncation.
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 1 << bit;
            assert!(
                Ledger::decode_snapshot(&damaged).is_err(),
                "flip at {byte}:{bit}"
            );
        }
    }
    for cut in 0..bytes.len() {
        assert!(
            Ledger::decode_snapshot(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// Rewrites the CRC so the structural checks (not the checksum) must catch the damage.
fn with_valid_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn forged_snapshots_with_valid_checksums_are_rejected() {
    let bytes = busy_ledger().encode_snapshot();
    // Counts far beyond the input: rejected before allocating.
    let mut forged = bytes.clone();
    forged[24..32].copy_from_slice(&u64::from(u32::MAX - 1).to_le_bytes());
    assert!(Ledger::decode_snapshot(&with_valid_crc(forged)).is_err());
    // A duplicate account id (the second account takes the first one's id).
    let mut forged = bytes.clone();
    forged[56 + 128] = 1;
    assert!(Ledger::decode_snapshot(&with_valid_crc(forged)).is_err());
    // A balance changed: breaks I1.
    let mut forged = bytes;
    forged[56 + 32] ^= 1; // debits_posted of account 1
    assert!(Ledger::decode_snapshot(&with_valid_crc(forged)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes);
        decode_everything(&with_valid_crc_if_long(bytes));
    }

    #[test]
    fn mutated_encodings_never_panic(
        which in 0..8_usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let encodings = encodings();
        let mut bytes = encodings[which % encodings.len()].clone();
        for (index, value) in &edits {
            let position = index.index(bytes.len());
            bytes[position] = *value;
        }
        decode_everything(&bytes);
        decode_everything(&with_valid_crc_if_long(bytes.clone()));
        bytes.truncate(cut.index(bytes.len() + 1));
        decode_everything(&bytes);
    }
}

fn with_valid_crc_if_long(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 4 {
        with_valid_crc(bytes)
    } else {
        bytes
    }
}
