//! Behaviour beyond result codes: what posts, voids, balancing, closing, expiry, rollback and
//! the history queries do to balances and answers.

use ledger_core::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, Command, CreateTransferResult as R,
    Ledger, Reply, SYSTEM_ID_MIN, Transfer, TransferFlags,
};

const SECOND_NS: u64 = 1_000_000_000;

fn ledger_with(accounts: &[Account]) -> Ledger {
    let mut ledger = Ledger::new();
    let results = ledger.create_accounts(accounts, SECOND_NS);
    assert!(results.iter().all(|result| result.is_ok()), "{results:?}");
    ledger
}

fn plain(id: u128) -> Account {
    Account::new(id, 1, 1)
}

fn apply(ledger: &mut Ledger, events: &[Transfer]) -> Vec<R> {
    let results = ledger.create_transfers(events, ledger.last_timestamp() + 1);
    assert_eq!(ledger.check_invariants(), Ok(()));
    results
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        ..Transfer::new(id, debit, credit, amount, 1, 1)
    }
}

fn resolve(id: u128, pending_id: u128, flags: TransferFlags, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        flags,
        amount,
        ..Transfer::default()
    }
}

#[test]
fn partial_post_books_part_and_releases_the_rest() {
    let mut ledger = ledger_with(&[plain(1), plain(2)]);
    let post = resolve(11, 10, TransferFlags::POST_PENDING_TRANSFER, 30);
    assert_eq!(
        apply(&mut ledger, &[pending(10, 1, 2, 100), post]),
        [R::Ok, R::Ok]
    );
    let [a, b] = ledger.lookup_accounts(&[1, 2])[..] else {
        panic!("two accounts")
    };
    assert_eq!((a.debits_pending, a.debits_posted), (0, 30));
    assert_eq!((b.credits_pending, b.credits_posted), (0, 30));
    let stored = ledger.lookup_transfers(&[11])[0];
    assert_eq!(
        (
            stored.debit_account_id,
            stored.credit_account_id,
            stored.amount
        ),
        (1, 2, 30)
    );
    assert_eq!((stored.ledger, stored.code), (1, 1));
    // The retry of the post, with the same zero (inherited) fields, is idempotent.
    assert_eq!(apply(&mut ledger, &[post]), [R::Exists]);
    assert_eq!(
        apply(&mut ledger, &[Transfer { amount: 31, ..post }]),
        [R::ExistsWithDifferentAmount]
    );
}

#[test]
fn void_releases_the_reservation() {
    let mut ledger = ledger_with(&[plain(1), plain(2)]);
    let void = resolve(11, 10, TransferFlags::VOID_PENDING_TRANSFER, 100);
    assert_eq!(
        apply(&mut ledger, &[pending(10, 1, 2, 100), void]),
        [R::Ok, R::Ok]
    );
    let [a, b] = ledger.lookup_accounts(&[1, 2])[..] else {
        panic!("two accounts")
    };
    assert_eq!(
        (
            a.debits_pending,
            a.debits_posted,
            b.credits_pending,
            b.credits_posted
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(ledger.lookup_transfers(&[11])[0].amount, 100);
}

#[test]
fn balancing_debit_moves_at_most_the_balance() {
    let no_overdraft = Account {
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..plain(1)
    };
    let mut ledger = ledger_with(&[no_overdraft, plain(2)]);
    assert_eq!(
        apply(&mut ledger, &[Transfer::new(10, 2, 1, 40, 1, 1)]),
        [R::Ok]
    );
    let sweep = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(11, 1, 2, 100, 1, 1)
    };
    assert_eq!(apply(&mut ledger, &[sweep]), [R::Ok]);
    assert_eq!(ledger.lookup_transfers(&[11])[0].amount, 40);
    assert_eq!(ledger.lookup_accounts(&[1])[0].balance_posted(), 0);
    assert_eq!(apply(&mut ledger, &[sweep]), [R::Exists]);
    assert_eq!(
        apply(
            &mut ledger,
            &[Transfer {
                amount: 30,
                ..sweep
            }]
        ),
        [R::ExistsWithDifferentAmount]
    );
    // Nothing left: a further balancing transfer moves zero.
    assert_eq!(apply(&mut ledger, &[Transfer { id: 12, ..sweep }]), [R::Ok]);
    assert_eq!(ledger.lookup_transfers(&[12])[0].amount, 0);
}

#[test]
fn balancing_credit_moves_at_most_the_debit_balance() {
    let mut ledger = ledger_with(&[plain(1), plain(2), plain(3)]);
    assert_eq!(
        apply(&mut ledger, &[Transfer::new(10, 2, 3, 25, 1, 1)]),
        [R::Ok]
    );
    let fill = Transfer {
        flags: TransferFlags::BALANCING_CREDIT,
        ..Transfer::new(11, 1, 2, 100, 1, 1)
    };
    assert_eq!(apply(&mut ledger, &[fill]), [R::Ok]);
    assert_eq!(ledger.lookup_transfers(&[11])[0].amount, 25);
}

#[test]
fn posting_the_closing_transfer_keeps_the_account_closed() {
    let mut ledger = ledger_with(&[plain(1), plain(2)]);
    let closing = Transfer {
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
        ..pending(10, 1, 2, 5)
    };
    let post = resolve(11, 10, TransferFlags::POST_PENDING_TRANSFER, u128::MAX);
    assert_eq!(apply(&mut ledger, &[closing, post]), [R::Ok, R::Ok]);
    assert!(ledger.lookup_accounts(&[1])[0].flags.closed());
    assert_eq!(
        apply(&mut ledger, &[Transfer::new(12, 1, 2, 1, 1, 1)]),
        [R::DebitAccountAlreadyClosed]
    );
}

#[test]
fn a_system_post_lands_in_a_closed_account() {
    let mut ledger = ledger_with(&[plain(1), plain(2), plain(3)]);
    // 1 → 2 pending; then 2 is closed by another pending transfer.
    let system_post_id = SYSTEM_ID_MIN + 7;
    let closing = Transfer {
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
        ..pending(11, 3, 2, 1)
    };
    assert_eq!(
        apply(&mut ledger, &[pending(10, 1, 2, 5), closing]),
        [R::Ok, R::Ok]
    );
    // A user's post is refused; a post with a system id (a decision taken while the account
    // was open) lands.
    let user_post = resolve(12, 10, TransferFlags::POST_PENDING_TRANSFER, u128::MAX);
    let system_post = resolve(
        system_post_id,
        10,
        TransferFlags::POST_PENDING_TRANSFER,
        u128::MAX,
    );
    assert_eq!(
        apply(&mut ledger, &[user_post, system_post]),
        [R::CreditAccountAlreadyClosed, R::Ok]
    );
    let account = ledger.lookup_accounts(&[2])[0];
    assert_eq!((account.credits_posted, account.credits_pending), (5, 1));
    assert!(account.flags.closed());
}

#[test]
fn expiry_at_the_exact_deadline_releases_before_the_batch() {
    let mut ledger = ledger_with(&[plain(1), plain(2)]);
    let closing = Transfer {
        timeout: 2,
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
        ..pending(10, 1, 2, 5)
    };
    assert_eq!(apply(&mut ledger, &[closing]), [R::Ok]);
    let deadline = ledger.lookup_transfers(&[10])[0].timestamp + 2 * SECOND_NS;
    assert!(ledger.lookup_accounts(&[2])[0].flags.closed());
    ledger.create_transfers(&[Transfer::new(11, 1, 2, 0, 1, 1)], deadline);
    // Expired at the deadline, before the batch ran: the reservation is gone and the account
    // the pending transfer closed is open again, so the batch's transfer was accepted.
    let [a, b] = ledger.lookup_accounts(&[1, 2])[..] else {
        panic!("two accounts")
    };
    assert_eq!((a.debits_pending, b.credits_pending), (0, 0));
    assert!(!b.flags.closed());
    assert_eq!(ledger.lookup_transfers(&[11]).len(), 1);
    let void = resolve(12, 10, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(apply(&mut ledger, &[void]), [R::PendingTransferExpired]);
}

#[test]
fn a_failed_chain_leaves_no_trace() {
    let accounts = [
        plain(1),
        plain(2),
        Account {
            flags: AccountFlags::HISTORY,
            ..plain(3)
        },
    ];
    let mut ledger = ledger_with(&accounts);
    let mut twin = ledger_with(&accounts);
    let setup = [pending(10, 1, 3, 50), Transfer::new(11, 3, 2, 5, 1, 1)];
    assert_eq!(apply(&mut ledger, &setup), [R::Ok, R::Ok]);
    assert_eq!(apply(&mut twin, &setup), [R::Ok, R::Ok]);
    let linked = |t: Transfer| Transfer {
        flags: t.flags | TransferFlags::LINKED,
        ..t
    };
    let chain = [
        linked(Transfer::new(20, 1, 3, 7, 1, 1)),
        linked(resolve(21, 10, TransferFlags::POST_PENDING_TRANSFER, 20)),
        linked(pending(22, 3, 1, 2)),
        Transfer::new(23, 2, 2, 1, 1, 1), // AccountsMustBeDifferent: not transient
    ];
    let failed = R::LinkedEventFailed;
    assert_eq!(
        apply(&mut ledger, &chain),
        [failed, failed, failed, R::AccountsMustBeDifferent]
    );
    // The twin gets as many events that fail on their own, so the clocks stay equal.
    let invalid = Transfer::new(0, 1, 2, 1, 1, 1);
    assert_eq!(apply(&mut twin, &[invalid; 4]), [R::IdMustNotBeZero; 4]);
    assert_eq!(ledger.encode_snapshot(), twin.encode_snapshot());
    // And the rolled-back ids are free again.
    assert_eq!(
        apply(
            &mut ledger,
            &[Transfer {
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..chain[1]
            }]
        ),
        [R::Ok]
    );
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, many filters")]
fn account_transfers_follow_the_filter() {
    let history = Account {
        flags: AccountFlags::HISTORY,
        ..plain(1)
    };
    let mut ledger = ledger_with(&[history, plain(2), plain(3)]);
    // Transfer i at timestamp (10 + i) s: odd ones debit account 1, even ones credit it.
    for i in 0..10_u128 {
        let (debit, credit) = if i % 2 == 1 { (1, 2) } else { (3, 1) };
        let timestamp = (10 + i as u64) * SECOND_NS;
        ledger.create_transfers(
            &[Transfer::new(100 + i, debit, credit, i + 1, 1, 1)],
            timestamp,
        );
    }
    let ids = |transfers: Vec<Transfer>| transfers.iter().map(|t| t.id - 100).collect::<Vec<_>>();
    let both = AccountFilter::new(1, 100);
    assert_eq!(
        ids(ledger.get_account_transfers(&both)),
        (0..10).collect::<Vec<_>>()
    );
    let debits = AccountFilter {
        flags: AccountFilterFlags::DEBITS,
        ..both
    };
    assert_eq!(ids(ledger.get_account_transfers(&debits)), [1, 3, 5, 7, 9]);
    let credits = AccountFilter {
        flags: AccountFilterFlags::CREDITS,
        limit: 2,
        ..both
    };
    assert_eq!(ids(ledger.get_account_transfers(&credits)), [0, 2]);
    let newest = AccountFilter {
        flags: both.flags | AccountFilterFlags::REVERSED,
        limit: 3,
        ..both
    };
    assert_eq!(ids(ledger.get_account_transfers(&newest)), [9, 8, 7]);
    let range = AccountFilter {
        timestamp_min: 12 * SECOND_NS,
        timestamp_max: 14 * SECOND_NS,
        ..both
    };
    assert_eq!(ids(ledger.get_account_transfers(&range)), [2, 3, 4]);
    assert_eq!(
        ids(ledger.get_account_transfers(&AccountFilter::new(2, 100))),
        [1, 3, 5, 7, 9]
    );
    for empty in [
        AccountFilter { limit: 0, ..both },
        AccountFilter {
            flags: AccountFilterFlags::REVERSED,
            ..both
        },
        AccountFilter {
            timestamp_min: 5,
            timestamp_max: 4,
            ..both
        },
        AccountFilter::new(99, 10),
    ] {
        assert!(ledger.get_account_transfers(&empty).is_empty(), "{empty:?}");
    }
    // Balance history: after transfer i, account 1 holds the sum of what it saw so far.
    let balances = ledger.get_account_balances(&both);
    assert_eq!(balances.len(), 10);
    let last = balances[9];
    assert_eq!(
        (last.debits_posted, last.credits_posted),
        (2 + 4 + 6 + 8 + 10, 1 + 3 + 5 + 7 + 9)
    );
    assert_eq!(last.timestamp, 19 * SECOND_NS);
    let newest_debit = ledger.get_account_balances(&AccountFilter { limit: 1, ..newest });
    assert_eq!(newest_debit, [last]);
    assert!(
        ledger
            .get_account_balances(&AccountFilter::new(2, 10))
            .is_empty(),
        "no HISTORY flag"
    );
}

#[test]
fn apply_dispatches_commands() {
    let mut ledger = Ledger::new();
    let reply = ledger.apply(&Command::CreateAccounts(vec![plain(1), plain(2)]), 5);
    assert!(matches!(reply, Reply::CreateAccounts(results) if results.iter().all(|r| r.is_ok())));
    let reply = ledger.apply(
        &Command::CreateTransfers(vec![Transfer::new(9, 1, 2, 3, 1, 1)]),
        6,
    );
    assert_eq!(reply, Reply::CreateTransfers(vec![R::Ok]));
    assert_eq!(
        ledger.last_timestamp(),
        7,
        "strictly increasing timestamps: 5, 6, then 7"
    );
    assert_eq!(ledger.lookup_transfers(&[9])[0].timestamp, 7);
    // An empty batch changes nothing, not even the clock.
    ledger.apply(&Command::CreateTransfers(Vec::new()), 100);
    assert_eq!(ledger.last_timestamp(), 7);
}

#[test]
fn with_capacity_sizes_the_indexes_once() {
    let mut ledger = Ledger::with_capacity(10, 1_000);
    let before = ledger.memory_usage();
    let accounts: Vec<Account> = (1..=10).map(plain).collect();
    assert!(
        ledger
            .create_accounts(&accounts, 1)
            .iter()
            .all(|r| r.is_ok())
    );
    let transfers: Vec<Transfer> = (1..=1_000)
        .map(|id| Transfer::new(id, 1 + id % 10, 1 + (id + 1) % 10, 1, 1, 1))
        .collect();
    assert!(apply(&mut ledger, &transfers).iter().all(|r| r.is_ok()));
    let after = ledger.memory_usage();
    assert_eq!(after.account_index_bytes, before.account_index_bytes);
    assert_eq!(after.transfer_index_bytes, before.transfer_index_bytes);
    assert_eq!(ledger.transfer_count(), 1_000);
}

/// A post or void that names its pending transfer's accounts takes them from the batch's
/// first pass instead of looking them up: the outcome must be exactly that of the same events
/// naming no account, across many events (the prefetch distance), a chain rolled back after a
/// post, and a post that names a wrong account.
#[test]
fn resolving_events_naming_their_accounts_match_those_naming_none() {
    let accounts: Vec<Account> = (1..=40).map(plain).collect();
    let pendings: Vec<Transfer> = (0..60_u128)
        .map(|i| pending(1_000 + i, 1 + i % 40, 1 + (i * 7 + 3) % 40, 10 + i))
        .collect();
    let resolutions = |named: bool| -> Vec<Transfer> {
        let mut events = Vec::new();
        for (i, p) in pendings.iter().enumerate() {
            let flags = if i % 3 == 0 {
                TransferFlags::VOID_PENDING_TRANSFER
            } else {
                TransferFlags::POST_PENDING_TRANSFER
            };
            let amount = if i % 3 == 0 { 0 } else { u128::MAX };
            let mut event = resolve(2_000 + i as u128, p.id, flags, amount);
            if named {
                // Both, only the debit, only the credit.
                if i % 4 != 2 {
                    event.debit_account_id = p.debit_account_id;
                }
                if i % 4 != 1 {
                    event.credit_account_id = p.credit_account_id;
                }
            }
            // Events 10..=12 form a chain whose last event fails: 10 and 11 roll back.
            if (10..12).contains(&i) {
                event.flags = event.flags.union(TransferFlags::LINKED);
            }
            if i == 12 {
                event.amount = p.amount + 1;
            }
            events.push(event);
        }
        events
    };
    let mut named = ledger_with(&accounts);
    let mut unnamed = ledger_with(&accounts);
    assert!(apply(&mut named, &pendings).iter().all(|r| r.is_ok()));
    assert!(apply(&mut unnamed, &pendings).iter().all(|r| r.is_ok()));
    let named_results = apply(&mut named, &resolutions(true));
    let unnamed_results = apply(&mut unnamed, &resolutions(false));
    assert_eq!(named_results, unnamed_results);
    assert_eq!(named_results[10], R::LinkedEventFailed);
    assert_eq!(named_results[12], R::ExceedsPendingTransferAmount);
    assert_eq!(
        named_results.iter().filter(|r| r.is_ok()).count(),
        57,
        "{named_results:?}"
    );
    let ids: Vec<u128> = (1..=40).collect();
    assert_eq!(named.lookup_accounts(&ids), unnamed.lookup_accounts(&ids));

    // A post naming an account that is not its pending transfer's is refused.
    let mut wrong = resolve(
        3_000,
        1_010,
        TransferFlags::POST_PENDING_TRANSFER,
        u128::MAX,
    );
    wrong.debit_account_id = 40;
    assert_eq!(
        apply(&mut named, &[wrong]),
        [R::PendingTransferHasDifferentDebitAccountId]
    );
}
