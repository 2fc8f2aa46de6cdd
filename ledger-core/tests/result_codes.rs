//! Every result code of `create_accounts` and `create_transfers`, each provoked by the smallest
//! event that breaks exactly that rule, plus a check that the table covers every variant.

use std::collections::BTreeSet;

use ledger_core::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult as R, Ledger, Transfer,
    TransferFlags,
};

const MAX: u128 = u128::MAX;
const SECOND_NS: u64 = 1_000_000_000;

// Accounts of the fixture (ledger 1 unless said otherwise).
const A: u128 = 1; // plain
const B: u128 = 2; // plain
const NO_OVERDRAFT: u128 = 3; // DEBITS_MUST_NOT_EXCEED_CREDITS, no funds
const NO_CREDIT: u128 = 4; // CREDITS_MUST_NOT_EXCEED_DEBITS, no debits
const OTHER_LEDGER: u128 = 5; // ledger 2
const CLOSED: u128 = 6; // created closed
const HUGE_PENDING_DEBIT: u128 = 8; // debits_pending = MAX - 5
const HUGE_PENDING_CREDIT: u128 = 9; // credits_pending = MAX - 5
const HUGE_POSTED_DEBIT: u128 = 10; // debits_posted = MAX - 5
const HUGE_POSTED_CREDIT: u128 = 11; // credits_posted = MAX - 5

// Transfers of the fixture.
const PENDING: u128 = 100; // pending A → B, 50, no timeout
const PENDING_WITH_TIMEOUT: u128 = 101; // pending A → B, 50, timeout 1 s
const POSTED: u128 = 102; // pending, then posted by 112
const VOIDED: u128 = 103; // pending, then voided by 113
const SINGLE_PHASE: u128 = 104; // A → B, 10, with user data

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer::new(id, debit, credit, amount, 1, 1)
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(id, debit, credit, amount)
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

fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    resolve(id, pending_id, TransferFlags::POST_PENDING_TRANSFER, amount)
}

fn void(id: u128, pending_id: u128) -> Transfer {
    resolve(id, pending_id, TransferFlags::VOID_PENDING_TRANSFER, 0)
}

fn single_phase() -> Transfer {
    Transfer {
        user_data_128: 7,
        user_data_64: 8,
        user_data_32: 9,
        ..transfer(SINGLE_PHASE, A, B, 10)
    }
}

/// Applies `events` at the next timestamp and returns their results.
fn apply(ledger: &mut Ledger, events: &[Transfer]) -> Vec<R> {
    let results = ledger.create_transfers(events, ledger.last_timestamp() + 1);
    ledger
        .check_invariants()
        .expect("invariants hold after every batch");
    results
}

fn apply_one(ledger: &mut Ledger, event: Transfer) -> R {
    apply(ledger, &[event])[0]
}

fn fixture() -> Ledger {
    let mut ledger = Ledger::new();
    let with = |id, flags| Account {
        flags,
        ..Account::new(id, 1, 1)
    };
    let accounts = [
        Account::new(A, 1, 1),
        Account::new(B, 1, 1),
        with(NO_OVERDRAFT, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        with(NO_CREDIT, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        Account::new(OTHER_LEDGER, 2, 1),
        with(CLOSED, AccountFlags::CLOSED),
        Account::new(HUGE_PENDING_DEBIT, 1, 1),
        Account::new(HUGE_PENDING_CREDIT, 1, 1),
        Account::new(HUGE_POSTED_DEBIT, 1, 1),
        Account::new(HUGE_POSTED_CREDIT, 1, 1),
    ];
    let results = ledger.create_accounts(&accounts, SECOND_NS);
    assert!(results.iter().all(|result| result.is_ok()), "{results:?}");
    let setup = [
        pending(PENDING, A, B, 50),
        Transfer {
            timeout: 1,
            ..pending(PENDING_WITH_TIMEOUT, A, B, 50)
        },
        pending(POSTED, A, B, 50),
        pending(VOIDED, A, B, 50),
        single_phase(),
        post(112, POSTED, MAX),
        void(113, VOIDED),
        pending(120, HUGE_PENDING_DEBIT, HUGE_PENDING_CREDIT, MAX - 5),
        transfer(121, HUGE_POSTED_DEBIT, HUGE_POSTED_CREDIT, MAX - 5),
    ];
    let results = ledger.create_transfers(&setup, 2 * SECOND_NS);
    assert!(results.iter().all(|result| result.is_ok()), "{results:?}");
    ledger
}

/// (name, event, expected) for every rule one event against the fixture can break.
#[allow(clippy::too_many_lines, reason = "one line per result code")]
fn single_event_cases() -> Vec<(&'static str, Transfer, R)> {
    let flags = TransferFlags::from_bits_retain;
    let existing = single_phase();
    vec![
        ("ok", transfer(200, A, B, 10), R::Ok),
        (
            "timestamp",
            Transfer {
                timestamp: 1,
                ..transfer(200, A, B, 1)
            },
            R::TimestampMustBeZero,
        ),
        (
            "reserved flag",
            Transfer {
                flags: flags(1 << 15),
                ..transfer(200, A, B, 1)
            },
            R::ReservedFlag,
        ),
        ("id zero", transfer(0, A, B, 1), R::IdMustNotBeZero),
        ("id max", transfer(MAX, A, B, 1), R::IdMustNotBeIntMax),
        (
            "exists flags",
            Transfer {
                flags: TransferFlags::BALANCING_DEBIT,
                ..existing
            },
            R::ExistsWithDifferentFlags,
        ),
        (
            "exists pending id",
            Transfer {
                pending_id: 5,
                ..existing
            },
            R::ExistsWithDifferentPendingId,
        ),
        (
            "exists timeout",
            Transfer {
                timeout: 5,
                ..existing
            },
            R::ExistsWithDifferentTimeout,
        ),
        (
            "exists debit",
            Transfer {
                debit_account_id: A + 20,
                ..existing
            },
            R::ExistsWithDifferentDebitAccountId,
        ),
        (
            "exists credit",
            Transfer {
                credit_account_id: A,
                ..existing
            },
            R::ExistsWithDifferentCreditAccountId,
        ),
        (
            "exists amount",
            Transfer {
                amount: 11,
                ..existing
            },
            R::ExistsWithDifferentAmount,
        ),
        (
            "exists ud128",
            Transfer {
                user_data_128: 1,
                ..existing
            },
            R::ExistsWithDifferentUserData128,
        ),
        (
            "exists ud64",
            Transfer {
                user_data_64: 1,
                ..existing
            },
            R::ExistsWithDifferentUserData64,
        ),
        (
            "exists ud32",
            Transfer {
                user_data_32: 1,
                ..existing
            },
            R::ExistsWithDifferentUserData32,
        ),
        (
            "exists ledger",
            Transfer {
                ledger: 2,
                ..existing
            },
            R::ExistsWithDifferentLedger,
        ),
        (
            "exists code",
            Transfer {
                code: 2,
                ..existing
            },
            R::ExistsWithDifferentCode,
        ),
        ("exists", existing, R::Exists),
        (
            "flags exclusive",
            Transfer {
                flags: TransferFlags::PENDING | TransferFlags::POST_PENDING_TRANSFER,
                ..transfer(200, A, B, 1)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (
            "balancing post",
            Transfer {
                flags: TransferFlags::BALANCING_DEBIT | TransferFlags::POST_PENDING_TRANSFER,
                ..transfer(200, A, B, 1)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (
            "debit zero",
            transfer(200, 0, B, 1),
            R::DebitAccountIdMustNotBeZero,
        ),
        (
            "debit max",
            transfer(200, MAX, B, 1),
            R::DebitAccountIdMustNotBeIntMax,
        ),
        (
            "credit zero",
            transfer(200, A, 0, 1),
            R::CreditAccountIdMustNotBeZero,
        ),
        (
            "credit max",
            transfer(200, A, MAX, 1),
            R::CreditAccountIdMustNotBeIntMax,
        ),
        (
            "same accounts",
            transfer(200, A, A, 1),
            R::AccountsMustBeDifferent,
        ),
        (
            "pending id on new",
            Transfer {
                pending_id: 100,
                ..transfer(200, A, B, 1)
            },
            R::PendingIdMustBeZero,
        ),
        (
            "timeout on single phase",
            Transfer {
                timeout: 1,
                ..transfer(200, A, B, 1)
            },
            R::TimeoutReservedForPendingTransfer,
        ),
        (
            "closing not pending",
            Transfer {
                flags: TransferFlags::CLOSING_DEBIT,
                ..transfer(200, A, B, 1)
            },
            R::ClosingTransferMustBePending,
        ),
        (
            "ledger zero",
            Transfer {
                ledger: 0,
                ..transfer(200, A, B, 1)
            },
            R::LedgerMustNotBeZero,
        ),
        (
            "code zero",
            Transfer {
                code: 0,
                ..transfer(200, A, B, 1)
            },
            R::CodeMustNotBeZero,
        ),
        (
            "debit unknown",
            transfer(200, 999, B, 1),
            R::DebitAccountNotFound,
        ),
        (
            "credit unknown",
            transfer(200, A, 999, 1),
            R::CreditAccountNotFound,
        ),
        (
            "ledgers differ",
            transfer(200, A, OTHER_LEDGER, 1),
            R::AccountsMustHaveTheSameLedger,
        ),
        (
            "transfer ledger",
            Transfer {
                ledger: 2,
                ..transfer(200, A, B, 1)
            },
            R::TransferMustHaveTheSameLedgerAsAccounts,
        ),
        (
            "debit closed",
            transfer(200, CLOSED, B, 1),
            R::DebitAccountAlreadyClosed,
        ),
        (
            "credit closed",
            transfer(200, A, CLOSED, 1),
            R::CreditAccountAlreadyClosed,
        ),
        (
            "debits pending",
            pending(200, HUGE_PENDING_DEBIT, B, 10),
            R::OverflowsDebitsPending,
        ),
        (
            "credits pending",
            pending(200, A, HUGE_PENDING_CREDIT, 10),
            R::OverflowsCreditsPending,
        ),
        (
            "debits posted",
            transfer(200, HUGE_POSTED_DEBIT, B, 10),
            R::OverflowsDebitsPosted,
        ),
        (
            "credits posted",
            transfer(200, A, HUGE_POSTED_CREDIT, 10),
            R::OverflowsCreditsPosted,
        ),
        (
            "debits",
            transfer(200, HUGE_PENDING_DEBIT, B, 10),
            R::OverflowsDebits,
        ),
        (
            "credits",
            transfer(200, A, HUGE_PENDING_CREDIT, 10),
            R::OverflowsCredits,
        ),
        (
            "exceeds credits",
            transfer(200, NO_OVERDRAFT, A, 1),
            R::ExceedsCredits,
        ),
        (
            "exceeds debits",
            transfer(200, A, NO_CREDIT, 1),
            R::ExceedsDebits,
        ),
        (
            "pending id zero",
            post(200, 0, 1),
            R::PendingIdMustNotBeZero,
        ),
        (
            "pending id max",
            post(200, MAX, 1),
            R::PendingIdMustNotBeIntMax,
        ),
        (
            "pending id self",
            post(200, 200, 1),
            R::PendingIdMustBeDifferent,
        ),
        (
            "timeout on post",
            Transfer {
                timeout: 1,
                ..post(200, PENDING, 1)
            },
            R::TimeoutReservedForPendingTransfer,
        ),
        (
            "pending unknown",
            post(200, 777, 1),
            R::PendingTransferNotFound,
        ),
        (
            "not pending",
            post(200, SINGLE_PHASE, 1),
            R::PendingTransferNotPending,
        ),
        (
            "post other debit",
            Transfer {
                debit_account_id: NO_OVERDRAFT,
                ..post(200, PENDING, 1)
            },
            R::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            "post other credit",
            Transfer {
                credit_account_id: NO_OVERDRAFT,
                ..post(200, PENDING, 1)
            },
            R::PendingTransferHasDifferentCreditAccountId,
        ),
        (
            "post other ledger",
            Transfer {
                ledger: 2,
                ..post(200, PENDING, 1)
            },
            R::PendingTransferHasDifferentLedger,
        ),
        (
            "post other code",
            Transfer {
                code: 2,
                ..post(200, PENDING, 1)
            },
            R::PendingTransferHasDifferentCode,
        ),
        (
            "post too much",
            post(200, PENDING, 51),
            R::ExceedsPendingTransferAmount,
        ),
        (
            "void part",
            Transfer {
                amount: 20,
                ..void(200, PENDING)
            },
            R::PendingTransferHasDifferentAmount,
        ),
        (
            "already posted",
            post(200, POSTED, 1),
            R::PendingTransferAlreadyPosted,
        ),
        (
            "already voided",
            void(200, VOIDED),
            R::PendingTransferAlreadyVoided,
        ),
    ]
}

#[test]
fn each_rule_gives_its_result_code() {
    for (name, event, expected) in single_event_cases() {
        let mut ledger = fixture();
        let accounts = [
            A,
            B,
            NO_OVERDRAFT,
            NO_CREDIT,
            HUGE_PENDING_DEBIT,
            HUGE_PENDING_CREDIT,
        ];
        let accounts_before = ledger.lookup_accounts(&accounts);
        let stored_before = ledger.lookup_transfers(&[event.id]);
        assert_eq!(apply_one(&mut ledger, event), expected, "case {name}");
        if !expected.is_ok() {
            // A rejection changes no balance and stores nothing.
            assert_eq!(
                ledger.lookup_accounts(&accounts),
                accounts_before,
                "case {name}"
            );
            assert_eq!(
                ledger.lookup_transfers(&[event.id]),
                stored_before,
                "case {name}"
            );
        }
    }
}

#[test]
fn every_transfer_result_code_is_covered() {
    let mut covered: BTreeSet<u32> = single_event_cases()
        .iter()
        .map(|case| case.2.code())
        .collect();
    // Covered by the scenario tests below.
    for result in [
        R::LinkedEventFailed,
        R::LinkedEventChainOpen,
        R::IdAlreadyFailed,
        R::OverflowsTimeout,
        R::PendingTransferExpired,
    ] {
        covered.insert(result.code());
    }
    // Returned by the cluster's client, never by the ledger (see system_ids_are_plain_ids).
    covered.insert(R::IdReservedForSystem.code());
    let all: BTreeSet<u32> = R::ALL.iter().map(|result| result.code()).collect();
    assert_eq!(covered, all);
}

#[test]
fn linked_event_failed_and_chain_open() {
    let mut ledger = fixture();
    let linked = |t: Transfer| Transfer {
        flags: t.flags | TransferFlags::LINKED,
        ..t
    };
    let results = apply(
        &mut ledger,
        &[
            linked(transfer(200, A, B, 5)),
            transfer(201, NO_OVERDRAFT, A, 1),
        ],
    );
    assert_eq!(results, [R::LinkedEventFailed, R::ExceedsCredits]);
    assert!(ledger.lookup_transfers(&[200, 201]).is_empty());
    let results = apply(
        &mut ledger,
        &[transfer(202, A, B, 5), linked(transfer(203, A, B, 5))],
    );
    assert_eq!(results, [R::Ok, R::LinkedEventChainOpen]);
    let results = apply(
        &mut ledger,
        &[
            linked(transfer(204, A, B, 5)),
            linked(transfer(205, A, B, 5)),
        ],
    );
    assert_eq!(results, [R::LinkedEventFailed, R::LinkedEventChainOpen]);
    assert!(ledger.lookup_transfers(&[203, 204, 205]).is_empty());
}

#[test]
fn transient_failure_burns_the_id() {
    let mut ledger = fixture();
    assert_eq!(
        apply_one(&mut ledger, transfer(300, NO_OVERDRAFT, A, 1)),
        R::ExceedsCredits
    );
    apply_one(&mut ledger, transfer(301, A, NO_OVERDRAFT, 10));
    // Funds now exist, but the id stays failed: a retry never flips its answer (I3).
    assert_eq!(
        apply_one(&mut ledger, transfer(300, NO_OVERDRAFT, A, 1)),
        R::IdAlreadyFailed
    );
    // A failure that is a property of the event does not burn the id.
    assert_eq!(
        apply_one(&mut ledger, transfer(302, A, A, 1)),
        R::AccountsMustBeDifferent
    );
    assert_eq!(apply_one(&mut ledger, transfer(302, A, B, 1)), R::Ok);
    let mut restored = Ledger::decode_snapshot(&ledger.encode_snapshot()).unwrap();
    assert_eq!(
        apply_one(&mut restored, transfer(300, NO_OVERDRAFT, A, 1)),
        R::IdAlreadyFailed
    );
}

#[test]
fn overflows_timeout() {
    let mut ledger = Ledger::new();
    let late = u64::MAX - 4 * SECOND_NS * 1_000_000_000;
    ledger.create_accounts(&[Account::new(A, 1, 1), Account::new(B, 1, 1)], late);
    let event = Transfer {
        timeout: u32::MAX,
        ..pending(200, A, B, 1)
    };
    assert_eq!(
        ledger.create_transfers(&[event], late),
        [R::OverflowsTimeout]
    );
    let event = Transfer {
        timeout: 1,
        ..pending(200, A, B, 1)
    };
    assert_eq!(ledger.create_transfers(&[event], late), [R::Ok]);
}

#[test]
fn pending_transfer_expired_before_and_within_a_batch() {
    // Swept before the batch: the deadline (2 s + 1 s) lies before the batch timestamp.
    let mut ledger = fixture();
    let created = ledger.lookup_transfers(&[PENDING_WITH_TIMEOUT])[0].timestamp;
    let deadline = created + SECOND_NS;
    let a_before = ledger.lookup_accounts(&[A])[0];
    let results = ledger.create_transfers(&[post(200, PENDING_WITH_TIMEOUT, MAX)], deadline + 5);
    assert_eq!(results, [R::PendingTransferExpired]);
    let a_after = ledger.lookup_accounts(&[A])[0];
    assert_eq!(
        a_after.debits_pending,
        a_before.debits_pending - 50,
        "expiry releases the reservation"
    );
    ledger
        .check_invariants()
        .expect("invariants hold after every batch");

    // Due between two events of one batch: the later event sees it expired.
    let mut ledger = fixture();
    let results = ledger.create_transfers(
        &[transfer(200, A, B, 1), void(201, PENDING_WITH_TIMEOUT)],
        deadline - 1,
    );
    assert_eq!(results, [R::Ok, R::PendingTransferExpired]);
    // Released at the start of the next batch.
    let before = ledger.lookup_accounts(&[B])[0].credits_pending;
    ledger.create_transfers(&[transfer(202, A, B, 1)], 0);
    assert_eq!(ledger.lookup_accounts(&[B])[0].credits_pending, before - 50);
}

#[test]
fn post_to_closed_account() {
    let mut ledger = fixture();
    apply_one(&mut ledger, pending(200, A, B, 5));
    let closing = Transfer {
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
        ..transfer(201, A, B, 0)
    };
    assert_eq!(apply_one(&mut ledger, closing), R::Ok);
    assert!(ledger.lookup_accounts(&[A])[0].flags.closed());
    assert_eq!(
        apply_one(&mut ledger, post(202, 200, MAX)),
        R::DebitAccountAlreadyClosed
    );
    let closing_credit = Transfer {
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
        ..transfer(203, NO_CREDIT, B, 0)
    };
    assert_eq!(
        apply_one(&mut ledger, pending(204, NO_OVERDRAFT, B, 0)),
        R::Ok
    );
    assert_eq!(apply_one(&mut ledger, closing_credit), R::Ok);
    assert_eq!(
        apply_one(&mut ledger, post(205, 204, MAX)),
        R::CreditAccountAlreadyClosed
    );
    // Voiding the closing transfers reopens the accounts.
    assert_eq!(apply_one(&mut ledger, void(206, 201)), R::Ok);
    assert_eq!(apply_one(&mut ledger, void(207, 203)), R::Ok);
    assert!(!ledger.lookup_accounts(&[A])[0].flags.closed());
    assert!(!ledger.lookup_accounts(&[B])[0].flags.closed());
    // The failed post burnt id 202; a new id posts.
    assert_eq!(
        apply_one(&mut ledger, post(202, 200, MAX)),
        R::IdAlreadyFailed
    );
    assert_eq!(apply_one(&mut ledger, post(208, 200, MAX)), R::Ok);
}

#[test]
#[allow(clippy::too_many_lines, reason = "one line per result code")]
fn every_account_result_code() {
    use CreateAccountResult as C;
    let account = |id| Account::new(id, 1, 1);
    let existing = Account {
        user_data_128: 1,
        user_data_64: 2,
        user_data_32: 3,
        ..account(50)
    };
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let cases = [
        ("ok", account(60), C::Ok),
        (
            "timestamp",
            Account {
                timestamp: 1,
                ..account(60)
            },
            C::TimestampMustBeZero,
        ),
        (
            "reserved",
            Account {
                reserved: 1,
                ..account(60)
            },
            C::ReservedField,
        ),
        (
            "reserved flag",
            Account {
                flags: AccountFlags::from_bits_retain(1 << 9),
                ..account(60)
            },
            C::ReservedFlag,
        ),
        ("id zero", account(0), C::IdMustNotBeZero),
        ("id max", account(MAX), C::IdMustNotBeIntMax),
        (
            "exists flags",
            Account {
                flags: AccountFlags::HISTORY,
                ..existing
            },
            C::ExistsWithDifferentFlags,
        ),
        (
            "exists ud128",
            Account {
                user_data_128: 9,
                ..existing
            },
            C::ExistsWithDifferentUserData128,
        ),
        (
            "exists ud64",
            Account {
                user_data_64: 9,
                ..existing
            },
            C::ExistsWithDifferentUserData64,
        ),
        (
            "exists ud32",
            Account {
                user_data_32: 9,
                ..existing
            },
            C::ExistsWithDifferentUserData32,
        ),
        (
            "exists ledger",
            Account {
                ledger: 9,
                ..existing
            },
            C::ExistsWithDifferentLedger,
        ),
        (
            "exists code",
            Account {
                code: 9,
                ..existing
            },
            C::ExistsWithDifferentCode,
        ),
        ("exists", existing, C::Exists),
        (
            "flags exclusive",
            Account {
                flags: both,
                ..account(60)
            },
            C::FlagsAreMutuallyExclusive,
        ),
        (
            "debits pending",
            Account {
                debits_pending: 1,
                ..account(60)
            },
            C::DebitsPendingMustBeZero,
        ),
        (
            "debits posted",
            Account {
                debits_posted: 1,
                ..account(60)
            },
            C::DebitsPostedMustBeZero,
        ),
        (
            "credits pending",
            Account {
                credits_pending: 1,
                ..account(60)
            },
            C::CreditsPendingMustBeZero,
        ),
        (
            "credits posted",
            Account {
                credits_posted: 1,
                ..account(60)
            },
            C::CreditsPostedMustBeZero,
        ),
        (
            "ledger zero",
            Account {
                ledger: 0,
                ..account(60)
            },
            C::LedgerMustNotBeZero,
        ),
        (
            "code zero",
            Account {
                code: 0,
                ..account(60)
            },
            C::CodeMustNotBeZero,
        ),
    ];
    let mut covered = BTreeSet::new();
    for (name, event, expected) in cases {
        let mut ledger = Ledger::new();
        assert_eq!(ledger.create_accounts(&[existing], 1), [C::Ok]);
        assert_eq!(
            ledger.create_accounts(&[event], 2),
            [expected],
            "case {name}"
        );
        covered.insert(expected.code());
    }
    let mut ledger = Ledger::new();
    let linked = Account {
        flags: AccountFlags::LINKED,
        ..account(70)
    };
    assert_eq!(
        ledger.create_accounts(&[linked, account(0)], 1),
        [C::LinkedEventFailed, C::IdMustNotBeZero]
    );
    assert!(
        ledger.lookup_accounts(&[70]).is_empty(),
        "the chain rolled back"
    );
    assert_eq!(
        ledger.create_accounts(&[account(71), linked], 2),
        [C::Ok, C::LinkedEventChainOpen]
    );
    covered.extend([C::LinkedEventFailed.code(), C::LinkedEventChainOpen.code()]);
    // Returned by the cluster's client, never by the ledger (see system_ids_are_plain_ids).
    covered.insert(C::IdReservedForSystem.code());
    let all: BTreeSet<u32> = C::ALL.iter().map(|result| result.code()).collect();
    assert_eq!(covered, all);
}

/// The ledger applies ids in the system range like any other id: the range is the cluster
/// client's rule, so the cluster itself can book its bridge accounts and cross-shard legs.
#[test]
fn system_ids_are_plain_ids() {
    let mut ledger = Ledger::new();
    let bridge = ledger_core::SYSTEM_ID_MIN + 7;
    let accounts = [Account::new(bridge, 1, 1), Account::new(3, 1, 1)];
    assert_eq!(
        ledger.create_accounts(&accounts, 1),
        [CreateAccountResult::Ok; 2]
    );
    let leg = Transfer::new(ledger_core::SYSTEM_ID_MIN, 3, bridge, 5, 1, 1);
    assert_eq!(ledger.create_transfers(&[leg], 2), [R::Ok]);
    assert_eq!(ledger.lookup_accounts(&[bridge])[0].credits_posted, 5);
}
