//! The simulated cluster: `shards` Paxos groups of 3 replicas of the real [`LedgerMachine`],
//! each a ledger-paxos [`Simulator`] in external-workload mode, all advanced on one simulated
//! clock; simulated clients and a resolver talk to the groups' leaders through simulated
//! requests that follow leader changes and retry the same bytes, like the real proposers.
//!
//! ```text
//!   next time t = min(every group's next event, the cluster's next wake-up)
//!   groups run to t ─► oracles apply newly chosen entries ─► checks ─► replies to requests
//!   wake-ups at t: client calls, request retries, resolver passes, restarts, samples
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use ledger_core::{
    Account, AccountFlags, Command, CreateAccountResult, CreateTransferResult as R, QueryReply,
    Reply, SYSTEM_ID_MIN, Transfer, TransferFlags,
};
use ledger_paxos::sim::{FaultProfile, SimOptions, SimRng, SimStats, Simulator};

use crate::crossshard::protocol::{
    CallMachine, CallOutcome, ChainMachine, Cross, FinishMachine, LocateMachine, Located, Phase,
    PostFinishMachine, PostMachine, PostOutcome, RecoveryMachine, Resolver, ResolverTiming,
    Unresolved, missing_bridges, missing_chain_bridges,
};
use crate::machine::LedgerMachine;
use crate::router::Router;
use crate::sim::oracle::{Oracle, Tracker};
use crate::sim::protocol::{self, Driven, Next, Request, Response, Step, completed_before};
use crate::wire::{self, Read, ReplyStatus};

/// Who crashes at a protocol step boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The leader of the coordinator (debit) shard.
    CoordinatorLeader,
    /// The leader of the participant (credit) shard.
    ParticipantLeader,
    /// The client driving the call: it forgets everything.
    Client,
}

/// A crash right after a protocol step, before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashCase {
    /// The step just completed.
    pub after: Step,
    /// Who crashes.
    pub who: Who,
}

impl CrashCase {
    /// Every (step boundary × who) case, in the order seeds cycle through them.
    pub const ALL: [CrashCase; 9] = {
        let steps = [Step::Prepared, Step::Voted, Step::Decided];
        let whos = [Who::CoordinatorLeader, Who::ParticipantLeader, Who::Client];
        let mut all = [CrashCase {
            after: Step::Prepared,
            who: Who::Client,
        }; 9];
        let mut index = 0;
        while index < 9 {
            all[index] = CrashCase {
                after: steps[index / 3],
                who: whos[index % 3],
            };
            index += 1;
        }
        all
    };

    /// The case seed `seed` exercises: consecutive seeds cycle through [`CrashCase::ALL`].
    pub fn for_seed(seed: u64) -> Self {
        Self::ALL[(seed % 9) as usize]
    }

    /// The position of this case in [`CrashCase::ALL`].
    pub fn index(self) -> usize {
        let step = match self.after {
            Step::Prepared => 0,
            Step::Voted => 1,
            Step::Decided => 2,
        };
        let who = match self.who {
            Who::CoordinatorLeader => 0,
            Who::ParticipantLeader => 1,
            Who::Client => 2,
        };
        step * 3 + who
    }
}

/// A bug planted on purpose, to show that the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// A participant posts its leg in the same entry as its vote, before any decision.
    ParticipantPostsBeforeDecision,
    /// The resolver aborts at the participant what it should commit (even a transfer the
    /// coordinator committed).
    ResolverAbortsCommitted,
    /// The resolver never runs: transfers whose client died stay prepared.
    NoResolver,
    /// A participant applies a user's post of a cross-shard pending transfer as a void
    /// (`x(t)` voids its leg while the coordinator posted).
    ParticipantVoidsUsersPost,
    /// A chain's finish voids its events' legs other than the head's, although the chain
    /// committed.
    ChainFinishVoidsMembers,
    /// The resolver commits users' pending transfers without their timeout (its markers carry
    /// none), so one whose caller gave up after the vote never expires.
    ResolverDropsTimeouts,
}

/// The protocol's timings, in simulated microseconds (shorter than the real ones).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// One attempt at a leader before the request is sent again.
    pub attempt_timeout_us: u64,
    /// A call's deadline (also the resolver's age for a coordinator leg).
    pub request_timeout_us: u64,
    /// The wait before asking again who leads.
    pub poll_us: u64,
    /// The resolver's pass interval.
    pub resolver_interval_us: u64,
    /// The resolver commits a participant leg this old.
    pub resolver_vote_age_us: u64,
    /// A client's pause between calls (drawn up to this).
    pub think_us: u64,
}

impl Timings {
    /// Timings drawn per seed (swarm testing), so resolvers and clients race in every order:
    /// attempts 50–300 ms, deadlines 0.3–1.2 s, passes every 50–200 ms, vote age 0.1–0.8 s.
    pub fn draw(random: &mut SimRng) -> Self {
        Self {
            attempt_timeout_us: random.range(50_000, 300_000),
            request_timeout_us: random.range(300_000, 1_200_000),
            poll_us: random.range(2_000, 10_000),
            resolver_interval_us: random.range(50_000, 200_000),
            resolver_vote_age_us: random.range(100_000, 800_000),
            think_us: random.range(0, 50_000),
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            attempt_timeout_us: 150_000,
            request_timeout_us: 1_000_000,
            poll_us: 5_000,
            resolver_interval_us: 100_000,
            resolver_vote_age_us: 400_000,
            think_us: 20_000,
        }
    }
}

/// What one whole-cluster run does.
#[derive(Debug, Clone)]
pub struct ClusterSimOptions {
    /// The seed of every random choice.
    pub seed: u64,
    /// The number of shards (Paxos groups of 3 replicas).
    pub shards: usize,
    /// The faults of every group (swarm: drawn from the seed).
    pub profile: FaultProfile,
    /// Faults happen before this time; at it everything heals and clients stop.
    pub heal_us: u64,
    /// The run ends this long after the heal.
    pub after_heal_us: u64,
    /// Simulated clients.
    pub clients: usize,
    /// Customer accounts per shard and ledger.
    pub accounts_per_shard: usize,
    /// Ledgers (currencies); conservation is checked per ledger.
    pub ledgers: u32,
    /// The opening balance of every customer.
    pub opening_balance: u128,
    /// Per transfer: the chance it crosses shards.
    pub cross_permille: u64,
    /// Per cross-shard transfer: the chance its credit account does not exist (a no vote).
    pub missing_credit_permille: u64,
    /// Per new call: the chance it is a user's cross-shard pending transfer (later posted,
    /// partly posted or voided by the workload; some carry a timeout of 1 s).
    pub pending_permille: u64,
    /// Per user's pending transfer: the chance it is closing (its debit account, its credit
    /// account or both, until it is voided or expires; for good if posted).
    pub closing_permille: u64,
    /// Per new call: the chance it is a linked chain of 2–3 transfers spanning shards (some
    /// events pending, posted or voided later like the others).
    pub chain_permille: u64,
    /// Per client turn while there is any: the chance it settles pending work (a post or void
    /// of a committed pending transfer, or a retry of a pending call whose outcome is
    /// unknown). After the heal the clients only settle, until everything is.
    pub settle_permille: u64,
    /// The targeted crash this seed exercises.
    pub case: CrashCase,
    /// Per call reaching the case's step: the chance the crash happens.
    pub case_permille: u64,
    /// Timings.
    pub timings: Timings,
    /// A prepared transfer must resolve within this long of both its shards having leaders
    /// after the heal.
    pub resolution_bound_us: u64,
    /// A bug to plant (tests of the checks).
    pub planted: Option<PlantedBug>,
    /// Print the resolver's passes, the targeted crashes and the calls' answers (set by the
    /// environment variable `SIM_CLUSTER_VERBOSE`, for replaying a failing seed).
    pub verbose: bool,
}

impl ClusterSimOptions {
    /// The scenario of `seed`: 4 shards × 3 replicas, the seed's swarm faults, and the
    /// seed's crash case.
    pub fn from_seed(seed: u64) -> Self {
        let paxos = SimOptions::from_seed(seed);
        let mut profile = paxos.profile;
        profile.replica_count = 3;
        let mut random = SimRng::new(seed ^ 0x7131_1465);
        Self {
            seed,
            shards: 4,
            profile,
            heal_us: paxos.heal_us,
            after_heal_us: 4_000_000,
            clients: random.range(4, 10) as usize,
            accounts_per_shard: 4,
            ledgers: 2,
            opening_balance: 1_000,
            cross_permille: 750,
            missing_credit_permille: 60,
            pending_permille: 120,
            closing_permille: 150,
            chain_permille: 100,
            settle_permille: 400,
            case: CrashCase::for_seed(seed),
            case_permille: random.range(150, 600),
            timings: Timings::draw(&mut random),
            resolution_bound_us: 2_000_000,
            planted: None,
            verbose: std::env::var_os("SIM_CLUSTER_VERBOSE").is_some(),
        }
    }
}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Transfers the clients started (same-shard and cross-shard).
    pub transfers: u64,
    /// Of which cross shards.
    pub cross_transfers: u64,
    /// Of which users' pending transfers across shards (alone in their call).
    pub pending_transfers: u64,
    /// Of which closing (`CLOSING_DEBIT` and/or `CLOSING_CREDIT`), same-shard or across.
    pub closing_transfers: u64,
    /// Customer accounts found closed at the end (each by a posted closing transfer).
    pub closed_accounts: u64,
    /// Of which events of linked chains spanning shards.
    pub chain_events: u64,
    /// Linked chains spanning shards started.
    pub chains: u64,
    /// Users' posts and voids submitted (including the partial posts).
    pub posts: u64,
    /// Of which answered `Ok`.
    pub posts_ok: u64,
    /// Transfers answered `Ok` or `Exists` (acknowledged).
    pub acknowledged: u64,
    /// Transfers answered with a rejection.
    pub rejected: u64,
    /// Calls that failed (no answer: deadline passed).
    pub failed_calls: u64,
    /// Calls retried with the same ids after a failure.
    pub retried_calls: u64,
    /// Targeted crashes, per [`CrashCase::ALL`] position.
    pub cases: [u64; 9],
    /// Resolver passes (scans of every shard).
    pub resolver_passes: u64,
    /// Recoveries the resolver drove to their end.
    pub recoveries: u64,
    /// Users' posts and voids the resolver found to apply (in the recoveries it started).
    pub recovered_posts: u64,
    /// Chains the resolver found to end.
    pub recovered_chains: u64,
    /// Expired pending transfers the resolver found to void.
    pub recovered_expiries: u64,
    /// Pending transfers across shards voided by their expiry, found at the end (each
    /// checked to have been voided no earlier than its deadline in ledger time).
    pub expired: u64,
    /// Cross-shard transfers committed (both legs posted).
    pub committed: u64,
    /// Cross-shard transfers aborted after a prepare.
    pub aborted: u64,
    /// The Paxos groups' own counts (faults, messages), summed over the shards.
    pub paxos: SimStats,
}

/// Adds `more` to `total`, field by field.
pub(crate) fn add_paxos_stats(total: &mut SimStats, more: &SimStats) {
    total.chosen_slots += more.chosen_slots;
    total.acknowledged_writes += more.acknowledged_writes;
    total.answered_reads += more.answered_reads;
    total.failed_requests += more.failed_requests;
    total.crashes += more.crashes;
    total.power_losses += more.power_losses;
    total.persist_failures += more.persist_failures;
    total.pauses += more.pauses;
    total.partitions += more.partitions;
    total.messages_sent += more.messages_sent;
    total.messages_dropped += more.messages_dropped;
    total.tears_past_promise += more.tears_past_promise;
    total.requests_to_other_leader += more.requests_to_other_leader;
    total.bit_flips += more.bit_flips;
    total.disk_losses += more.disk_losses;
}

#[derive(Debug, Clone, Copy)]
enum Wake {
    Setup,
    Client { client: usize, generation: u64 },
    Rpc(u64),
    ResolverPass,
    Restart { shard: usize, replica: usize },
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Setup,
    Client { client: usize, generation: u64 },
    Resolver,
}

#[derive(Debug)]
enum JobKind {
    Setup {
        round: u8,
    },
    Local {
        transfers: Vec<Transfer>,
        /// The shard (a located post's), else the debit account's.
        shard: Option<usize>,
        sent: bool,
    },
    /// A cross-shard call's missing bridge accounts, created first (as the cluster does).
    Bridges {
        transfers: Vec<Transfer>,
        created: Vec<Vec<u128>>,
        chain: bool,
    },
    /// A user's post or void being located.
    Locate {
        driven: Driven<LocateMachine>,
        transfers: Vec<Transfer>,
    },
    /// A user's post or void of a cross-shard pending transfer, at its coordinator.
    Post {
        driven: Driven<PostMachine>,
        transfers: Vec<Transfer>,
        shards: (usize, usize),
    },
    PostFinish(Driven<PostFinishMachine>),
    /// A linked chain spanning shards.
    Chain {
        driven: Driven<ChainMachine>,
        transfers: Vec<Transfer>,
    },
    Call {
        driven: Driven<CallMachine>,
        transfers: Vec<Transfer>,
    },
    Finish(Driven<FinishMachine>),
    Scan,
    /// A resolver's recovery of a pair of shards (coordinator, participant).
    Recovery(Driven<RecoveryMachine>, (usize, usize)),
}

#[derive(Debug)]
struct Job {
    owner: Owner,
    kind: JobKind,
    deadline_us: u64,
    answers: Vec<Option<Response>>,
    outstanding: usize,
}

#[derive(Debug)]
struct Rpc {
    job: u64,
    index: usize,
    shard: usize,
    bytes: Bytes,
    is_read: bool,
    deadline_us: u64,
    attempt: Option<(usize, u64, u64)>,
}

#[derive(Debug, Default)]
struct Client {
    generation: u64,
    busy: bool,
    counter: u64,
    retry: Option<Vec<Transfer>>,
    /// The bridge accounts this client knows exist (forgotten when it crashes).
    bridges: BTreeSet<u128>,
}

/// What kind of event a planned transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A plain transfer (same-shard or cross-shard).
    Plain,
    /// A user's cross-shard pending transfer.
    Pending,
    /// An event of a linked chain spanning shards, whose first event is `head`.
    Chain { head: u128 },
    /// A user's post or void of pending transfer `t` (its shards are `t`'s).
    Post { t: u128 },
}

/// Pending work the workload keeps until it is settled (its notebook survives client
/// crashes: the workload, not the client process, owes the post or void).
#[derive(Debug, Clone)]
pub(crate) enum Unsettled {
    /// A call holding pending events whose outcome is unknown: retried with the same ids.
    Call {
        transfers: Vec<Transfer>,
        chain: bool,
    },
    /// A committed pending transfer `t`, still to post or void (`post`: the one to retry), by
    /// a client from `from_us` on (for one with a timeout, only once the resolver should
    /// have voided it, so the resolver's expiry is what the checks see).
    Open {
        t: u128,
        post: Option<Transfer>,
        from_us: u64,
    },
}

/// A transfer the clients started, and what they were answered.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) kind: Kind,
    pub(crate) transfer: Transfer,
    pub(crate) debit_shard: usize,
    pub(crate) credit_shard: usize,
    pub(crate) answered: Option<R>,
}

/// The whole-cluster simulation. See the module docs.
pub struct ClusterSim {
    options: ClusterSimOptions,
    router: Router,
    random: SimRng,
    now_us: u64,
    groups: Vec<Simulator<LedgerMachine>>,
    queue: BTreeMap<(u64, u64), Wake>,
    sequence: u64,
    rpcs: BTreeMap<u64, Rpc>,
    rpc_next: u64,
    by_request: HashMap<(usize, usize, u64), u64>,
    jobs: BTreeMap<u64, Job>,
    job_next: u64,
    clients: Vec<Client>,
    resolver: Resolver,
    /// Whether the resolver's scan is still running.
    scanning: bool,
    customers: Vec<Account>,
    planned: BTreeMap<u128, Planned>,
    /// The workload's pending work by key (its first id), and the client settling it.
    notebook: BTreeMap<u128, (Unsettled, Option<usize>)>,
    oracles: Vec<Oracle>,
    tracker: Tracker,
    /// Per shard after the heal: when it first had a leader (I11), and a serving one (caught
    /// up with the shard's chosen log, and it answered a request since it last became leader).
    leader_seen: Vec<Option<u64>>,
    leader_since: Vec<Option<u64>>,
    /// Per shard: the leader that answered a request (`Ok`) while leading, until it stops.
    served_by: Vec<Option<usize>>,
    setup_done: bool,
    last_bound_check_us: u64,
    trace: ledger_paxos::sim::rng::Fnv,
    /// What happened so far.
    pub stats: ClusterStats,
}

fn config_hook(config: &mut ledger_paxos::Config) {
    // Ledger snapshots hold every account and transfer: send them in larger chunks, and
    // batch a few calls per entry.
    config.snapshot_chunk_size_bytes_max = 16 * 1024;
    config.snapshot_interval_slots = 64;
    config.batch_size_bytes_max = 8 * 1024;
}

const SETUP_MINT_CODE: u16 = 2;
const CUSTOMER_CODE: u16 = 1;
/// The offset of customer ids (below it: mints).
const CUSTOMER_ID_BASE: u128 = 1_000;
/// Every shard has a leader this soon after the heal (I11).
const LEADER_BOUND_US: u64 = 3_000_000;
/// Credit accounts that never exist (a no vote at the participant).
const MISSING_ID_BASE: u128 = 900_000;
/// After the heal, clients settle pending work until this long before the end.
const SETTLE_MARGIN_US: u64 = 1_500_000;

impl ClusterSim {
    /// Builds the groups and schedules the setup, the resolver and the samples.
    ///
    /// # Errors
    ///
    /// A description if a replica cannot start.
    pub fn new(options: ClusterSimOptions) -> Result<Self, String> {
        let router = Router::new(options.shards);
        let mut groups = Vec::with_capacity(options.shards);
        for shard in 0..options.shards {
            let mut paxos = SimOptions::from_seed(options.seed);
            paxos.seed = options
                .seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(shard as u64 + 1);
            paxos.profile = options.profile.clone();
            paxos.heal_us = options.heal_us;
            paxos.after_heal_us = options.after_heal_us;
            paxos.external_workload = true;
            paxos.faults_from_us = 1_000_000;
            paxos.config_hook = Some(config_hook);
            groups.push(Simulator::new(paxos).map_err(|e| format!("shard {shard}: {e}"))?);
        }
        let mut customers = Vec::new();
        for ledger in 1..=options.ledgers {
            for index in 0..options.accounts_per_shard * options.shards {
                let id = CUSTOMER_ID_BASE * u128::from(ledger) * 100 + index as u128;
                customers.push(Account {
                    flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    ..Account::new(id, ledger, CUSTOMER_CODE)
                });
            }
        }
        let resolver_timing = ResolverTiming {
            interval: Duration::from_micros(options.timings.resolver_interval_us),
            vote_age: Duration::from_micros(options.timings.resolver_vote_age_us),
            coordinator_age: Duration::from_micros(options.timings.request_timeout_us),
        };
        let mut sim = Self {
            router,
            random: SimRng::new(options.seed ^ 0xC1A5_7E55),
            now_us: 0,
            groups,
            queue: BTreeMap::new(),
            sequence: 0,
            rpcs: BTreeMap::new(),
            rpc_next: 1,
            by_request: HashMap::new(),
            jobs: BTreeMap::new(),
            job_next: 1,
            clients: (0..options.clients).map(|_| Client::default()).collect(),
            resolver: Resolver::new(resolver_timing),
            scanning: false,
            customers,
            planned: BTreeMap::new(),
            notebook: BTreeMap::new(),
            oracles: (0..options.shards).map(|_| Oracle::default()).collect(),
            tracker: Tracker::default(),
            leader_seen: vec![None; options.shards],
            leader_since: vec![None; options.shards],
            served_by: vec![None; options.shards],
            setup_done: false,
            last_bound_check_us: 0,
            trace: ledger_paxos::sim::rng::Fnv::default(),
            stats: ClusterStats::default(),
            options,
        };
        sim.schedule(0, Wake::Setup);
        sim.schedule(sim.options.timings.resolver_interval_us, Wake::ResolverPass);
        sim.schedule(100_000, Wake::Sample);
        Ok(sim)
    }

    /// The current simulated time.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The hash of everything that happened: the cluster's own trace and every group's.
    pub fn trace_hash(&self) -> u64 {
        let mut hash = self.trace;
        for group in &self.groups {
            hash.word(group.trace_hash());
        }
        hash.0
    }

    fn end_us(&self) -> u64 {
        self.options.heal_us + self.options.after_heal_us
    }

    fn schedule(&mut self, at_us: u64, wake: Wake) {
        self.sequence += 1;
        self.queue.insert((at_us, self.sequence), wake);
    }

    /// Runs the whole scenario, then the final checks.
    ///
    /// # Errors
    ///
    /// The first violation.
    pub fn run(&mut self) -> Result<(), String> {
        let end_us = self.end_us();
        loop {
            let next_group = self
                .groups
                .iter()
                .filter_map(Simulator::next_event_us)
                .min();
            let next_own = self.queue.keys().next().map(|(at, _)| *at);
            let Some(next) = next_group.into_iter().chain(next_own).min() else {
                break;
            };
            if next > end_us {
                break;
            }
            self.now_us = next;
            self.run_groups_to(next)?;
            self.after_groups()?;
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > next {
                    break;
                }
                let wake = entry.remove();
                self.handle(wake)?;
            }
        }
        self.now_us = end_us;
        self.run_groups_to(end_us)?;
        self.after_groups()?;
        self.final_checks()
    }

    fn run_groups_to(&mut self, until_us: u64) -> Result<(), String> {
        for (shard, group) in self.groups.iter_mut().enumerate() {
            group
                .run_until(until_us)
                .map_err(|violation| format!("shard {shard}: {violation}"))?;
        }
        Ok(())
    }

    /// Feeds the oracles, checks, and hands replies to the requests.
    fn after_groups(&mut self) -> Result<(), String> {
        let mut applied = false;
        for shard in 0..self.groups.len() {
            applied |= self.oracles[shard].catch_up(
                shard,
                &self.groups[shard],
                self.now_us,
                &self.planned,
                &mut self.tracker,
            )?;
        }
        if applied && self.setup_done {
            self.tracker.check_conservation(
                &self.oracles,
                &self.customers,
                self.options.opening_balance,
            )?;
        }
        for shard in 0..self.groups.len() {
            if self.served_by[shard].is_some_and(|replica| !self.groups[shard].is_leader(replica)) {
                self.served_by[shard] = None;
            }
            for reply in self.groups[shard].take_replies() {
                if reply.result.is_ok() && self.groups[shard].is_leader(reply.replica) {
                    self.served_by[shard] = Some(reply.replica);
                }
                self.on_reply(shard, reply)?;
            }
        }
        if self.now_us >= self.options.heal_us {
            for shard in 0..self.groups.len() {
                // A serving leader: caught up with its shard's chosen log, and it answered a
                // request since it became leader. A leader may first spend a while filling
                // slots whose Accepts were lost before the heal: not the protocol's time (it
                // was over a second in seeds 3226816527 and 22381, while ledger-paxos retried
                // Accepts only on a periodic heartbeat that every read round postponed).
                let serving = self.leader_of(shard).is_some_and(|leader| {
                    self.served_by[shard] == Some(leader)
                        && self.groups[shard]
                            .applied_slot(leader)
                            .is_some_and(|applied| applied >= self.oracles[shard].next_slot())
                });
                if self.leader_seen[shard].is_none() && self.leader_of(shard).is_some() {
                    self.leader_seen[shard] = Some(self.now_us);
                }
                if self.leader_since[shard].is_none() && serving {
                    self.leader_since[shard] = Some(self.now_us);
                }
            }
            if self.now_us >= self.last_bound_check_us + 10_000 {
                self.last_bound_check_us = self.now_us;
                self.tracker.check_resolution_bound(
                    self.now_us,
                    &self.leader_since,
                    &self.planned,
                    self.options.resolution_bound_us,
                )?;
            }
        }
        Ok(())
    }

    fn leaders(&self, shard: usize) -> Vec<usize> {
        let group = &self.groups[shard];
        (0..group.replica_count())
            .filter(|&replica| group.is_reachable(replica) && group.is_leader(replica))
            .collect()
    }

    fn leader_of(&self, shard: usize) -> Option<usize> {
        self.leaders(shard).first().copied()
    }

    fn handle(&mut self, wake: Wake) -> Result<(), String> {
        match wake {
            Wake::Setup => self.start_setup(),
            Wake::Client { client, generation } => self.on_client(client, generation),
            Wake::Rpc(id) => self.try_rpc(id),
            Wake::ResolverPass => self.on_resolver_pass(),
            Wake::Restart { shard, replica } => {
                if !self.groups[shard].is_reachable(replica)
                    && self.groups[shard].applied_slot(replica).is_none()
                {
                    self.groups[shard]
                        .restart(replica)
                        .map_err(|violation| format!("shard {shard}: {violation}"))?;
                }
                Ok(())
            }
            Wake::Sample => self.on_sample(),
        }
    }

    // ---- jobs and requests ---------------------------------------------------------------

    fn insert_job(&mut self, owner: Owner, kind: JobKind, deadline_us: u64) -> (u64, Job) {
        let id = self.job_next;
        self.job_next += 1;
        let job = Job {
            owner,
            kind,
            deadline_us,
            answers: Vec::new(),
            outstanding: 0,
        };
        (id, job)
    }

    fn advance_job(&mut self, id: u64) -> Result<(), String> {
        let Some(mut job) = self.jobs.remove(&id) else {
            return Ok(());
        };
        let answers: Vec<Response> = std::mem::take(&mut job.answers)
            .into_iter()
            .map(|answer| answer.unwrap_or(Response::Failed))
            .collect();
        match &mut job.kind {
            JobKind::Setup { round } => {
                if *round > 0 {
                    check_setup(*round, &answers)?;
                }
                *round += 1;
                if *round > 2 {
                    self.setup_finished();
                    return Ok(());
                }
                let requests = self.setup_requests(*round);
                self.send_round(id, job, requests, None)
            }
            JobKind::Local {
                transfers,
                shard,
                sent,
            } => {
                if *sent {
                    let results = match answers.first() {
                        Some(Response::Transfers(results)) => Ok(results.clone()),
                        _ => Err("no answer".to_string()),
                    };
                    let transfers = std::mem::take(transfers);
                    self.call_answered(job.owner, &transfers, results);
                    return Ok(());
                }
                *sent = true;
                let shard =
                    shard.unwrap_or_else(|| self.router.shard_of(transfers[0].debit_account_id));
                let requests = vec![Request::Transfers {
                    shard,
                    transfers: transfers.clone(),
                }];
                self.send_round(id, job, requests, None)
            }
            JobKind::Bridges { .. } => self.after_bridges(id, job, &answers),
            JobKind::Call { driven, transfers } => {
                if let Some(next) = driven.advance(&answers)? {
                    return self.continue_call(id, job, next);
                }
                let transfers = std::mem::take(transfers);
                self.call_answered(job.owner, &transfers, Err("a request failed".into()));
                Ok(())
            }
            JobKind::Finish(driven) => match driven.advance(&answers)? {
                Some(Next::Send { requests, phase }) => self.send_round(id, job, requests, phase),
                Some(Next::Done(())) | None => Ok(()),
            },
            JobKind::PostFinish(_)
            | JobKind::Recovery(..)
            | JobKind::Locate { .. }
            | JobKind::Post { .. }
            | JobKind::Chain { .. } => self.advance_users_job(id, job, &answers),
            JobKind::Scan => self.after_scan(&answers),
        }
    }

    /// Advances a job of users' posts, chains, or the resolver's recoveries.
    fn advance_users_job(
        &mut self,
        id: u64,
        mut job: Job,
        answers: &[Response],
    ) -> Result<(), String> {
        match &mut job.kind {
            JobKind::PostFinish(driven) => match driven.advance(answers)? {
                Some(Next::Send { requests, phase }) => self.send_round(id, job, requests, phase),
                Some(Next::Done(())) | None => Ok(()),
            },
            JobKind::Locate { driven, transfers } => match driven.advance(answers)? {
                Some(Next::Send { requests, phase }) => self.send_round(id, job, requests, phase),
                Some(Next::Done(located)) => {
                    let transfers = std::mem::take(transfers);
                    self.after_locate(job.owner, job.deadline_us, transfers, &located)
                }
                None => {
                    let transfers = std::mem::take(transfers);
                    self.call_answered(job.owner, &transfers, Err("a request failed".into()));
                    Ok(())
                }
            },
            JobKind::Post { driven, .. } => {
                if let Some(next) = driven.advance(answers)? {
                    return self.continue_post(id, job, next);
                }
                let JobKind::Post { transfers, .. } = &job.kind else {
                    return Ok(());
                };
                let transfers = transfers.clone();
                self.call_answered(job.owner, &transfers, Err("a request failed".into()));
                Ok(())
            }
            JobKind::Chain { driven, transfers } => {
                if let Some(next) = driven.advance(answers)? {
                    return self.continue_chain(id, job, next);
                }
                let transfers = std::mem::take(transfers);
                self.call_answered(job.owner, &transfers, Err("a request failed".into()));
                Ok(())
            }
            JobKind::Recovery(driven, (debit_shard, credit_shard)) => {
                let (debit_shard, credit_shard) = (*debit_shard, *credit_shard);
                let next = driven.advance(answers)?;
                if let Some(Next::Send { requests, phase }) = next {
                    return self.send_round(id, job, requests, phase);
                }
                if next.is_some() {
                    self.stats.recoveries += 1;
                }
                self.resolver.recovery_ended(debit_shard, credit_shard);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A call's bridges exist (or could not be created): its machine starts.
    fn after_bridges(&mut self, id: u64, mut job: Job, answers: &[Response]) -> Result<(), String> {
        let JobKind::Bridges {
            transfers,
            created,
            chain,
        } = &mut job.kind
        else {
            return Ok(());
        };
        for (ids, answer) in created.iter().zip(answers) {
            let Response::Accounts(results) = answer else {
                let transfers = std::mem::take(transfers);
                let failed = Err("a bridge could not be created".into());
                self.call_answered(job.owner, &transfers, failed);
                return Ok(());
            };
            for (id, result) in ids.iter().zip(results) {
                if *result != CreateAccountResult::Ok && *result != CreateAccountResult::Exists {
                    return Err(format!("bridge account {id}: {result:?}"));
                }
            }
        }
        if let Owner::Client { client, generation } = job.owner {
            if self.clients[client].generation == generation {
                self.clients[client]
                    .bridges
                    .extend(created.iter().flatten().copied());
            }
        }
        let transfers = std::mem::take(transfers);
        if *chain {
            let (driven, next) = protocol::chain(self.router, &transfers);
            job.kind = JobKind::Chain { driven, transfers };
            return self.continue_chain(id, job, next);
        }
        let (driven, next) = protocol::call(self.router, &transfers);
        job.kind = JobKind::Call { driven, transfers };
        self.continue_call(id, job, next)
    }

    /// A post's pending transfer is located: to one shard as is, or across shards.
    fn after_locate(
        &mut self,
        owner: Owner,
        deadline: u64,
        transfers: Vec<Transfer>,
        located: &[Located],
    ) -> Result<(), String> {
        match located.first() {
            Some(Located::Local { shard, event }) => {
                let kind = JobKind::Local {
                    transfers: vec![*event],
                    shard: Some(*shard),
                    sent: false,
                };
                let (id, job) = self.insert_job(owner, kind, deadline);
                self.jobs.insert(id, job);
                self.advance_job(id)
            }
            Some(Located::Cross(post)) => {
                let shards = post.shards();
                let (driven, next) = protocol::post(self.router, *post);
                let kind = JobKind::Post {
                    driven,
                    transfers,
                    shards,
                };
                let (id, job) = self.insert_job(owner, kind, deadline);
                self.continue_post(id, job, next)
            }
            None => Err("the locate machine located nothing".to_string()),
        }
    }

    /// A user's post: its coordinator logged it (a crash of the case may follow), then the
    /// caller's answer, then the participant applies it and the coordinator acknowledges.
    fn continue_post(&mut self, id: u64, job: Job, next: Next<PostOutcome>) -> Result<(), String> {
        let JobKind::Post {
            transfers, shards, ..
        } = &job.kind
        else {
            return Ok(());
        };
        match next {
            Next::Send { requests, phase } => self.send_round(id, job, requests, phase),
            Next::Done(outcome) => {
                let (coordinator, participant) = *shards;
                if !outcome.finishes.is_empty()
                    && self.options.case.after == Step::Decided
                    && self.inject_case(job.owner, Some(coordinator), participant)
                {
                    return Ok(());
                }
                let transfers = transfers.clone();
                self.call_answered(job.owner, &transfers, Ok(outcome.results));
                if outcome.finishes.is_empty() {
                    return Ok(());
                }
                let (driven, next) = protocol::post_finish(self.router, outcome.finishes);
                let deadline = self.now_us + self.options.timings.request_timeout_us;
                let (id, job) = self.insert_job(job.owner, JobKind::PostFinish(driven), deadline);
                match next {
                    Next::Send { requests, phase } => self.send_round(id, job, requests, phase),
                    Next::Done(()) => Ok(()),
                }
            }
        }
    }

    /// A chain's machine asked for its next round (maybe after a crash of the case), or
    /// answered.
    fn continue_chain(&mut self, id: u64, job: Job, next: Next<Vec<Vec<R>>>) -> Result<(), String> {
        let JobKind::Chain { driven, transfers } = &job.kind else {
            return Ok(());
        };
        match next {
            Next::Send { requests, phase } => {
                let step = match phase {
                    Some(Phase::Prepare) => Some(Step::Prepared),
                    Some(Phase::Decide) => Some(Step::Voted),
                    Some(Phase::Finish) => Some(Step::Decided),
                    _ => None,
                };
                if step == Some(self.options.case.after) {
                    let coordinator = driven.machine().first_coordinator();
                    let participant = transfers
                        .iter()
                        .flat_map(|t| [t.debit_account_id, t.credit_account_id])
                        .map(|account| self.router.shard_of(account))
                        .find(|&shard| Some(shard) != coordinator)
                        .unwrap_or(0);
                    if self.inject_case(job.owner, coordinator, participant) {
                        return Ok(());
                    }
                }
                self.send_round(id, job, requests, phase)
            }
            Next::Done(results) => {
                let transfers = transfers.clone();
                let results = results.into_iter().next().unwrap_or_default();
                self.call_answered(job.owner, &transfers, Ok(results));
                Ok(())
            }
        }
    }

    /// A call's machine asked for its next round (maybe after a crash of the case), or
    /// answered the caller and handed over step 4.
    fn continue_call(&mut self, id: u64, job: Job, next: Next<CallOutcome>) -> Result<(), String> {
        let JobKind::Call { driven, transfers } = &job.kind else {
            return Ok(());
        };
        let case = self.options.case;
        match next {
            Next::Send { requests, phase } => {
                if completed_before(phase) == Some(case.after)
                    && self.inject_call_case(job.owner, driven.machine(), transfers)
                {
                    // The client crashed with the call: nothing more is sent.
                    return Ok(());
                }
                self.send_round(id, job, requests, phase)
            }
            Next::Done(outcome) => {
                if !outcome.finishes.is_empty()
                    && case.after == Step::Decided
                    && self.inject_call_case(job.owner, driven.machine(), transfers)
                {
                    return Ok(());
                }
                let transfers = transfers.clone();
                self.call_answered(job.owner, &transfers, Ok(outcome.results));
                if outcome.finishes.is_empty() {
                    return Ok(());
                }
                let (driven, next) = protocol::finish(self.router, &outcome.finishes);
                let deadline = self.now_us + self.options.timings.request_timeout_us;
                let (id, job) = self.insert_job(job.owner, JobKind::Finish(driven), deadline);
                match next {
                    Next::Send { requests, phase } => self.send_round(id, job, requests, phase),
                    Next::Done(()) => Ok(()),
                }
            }
        }
    }

    /// Sends one round of a job's requests, all at once.
    fn send_round(
        &mut self,
        id: u64,
        mut job: Job,
        requests: Vec<Request>,
        phase: Option<Phase>,
    ) -> Result<(), String> {
        let requests = self.plant(job.owner, phase, requests);
        job.answers = vec![None; requests.len()];
        job.outstanding = requests.len();
        let deadline_us = job.deadline_us;
        self.jobs.insert(id, job);
        if requests.is_empty() {
            return self.advance_job(id);
        }
        for (index, request) in requests.into_iter().enumerate() {
            let rpc = self.rpc_next;
            self.rpc_next += 1;
            let shard = request.shard();
            let nonce = (1 << 120) | u128::from(rpc);
            let (bytes, is_read) = match request {
                Request::Transfers { transfers, .. } => (
                    wire::encode_command(nonce, &Command::CreateTransfers(transfers)),
                    false,
                ),
                Request::Accounts { accounts, .. } => (
                    wire::encode_command(nonce, &Command::CreateAccounts(accounts)),
                    false,
                ),
                Request::Read { read, .. } => (read.encode(), true),
            };
            self.rpcs.insert(
                rpc,
                Rpc {
                    job: id,
                    index,
                    shard,
                    bytes,
                    is_read,
                    deadline_us,
                    attempt: None,
                },
            );
            self.try_rpc(rpc)?;
        }
        Ok(())
    }

    /// Sends a request to the shard's leader (a random one if two believe they lead), unless
    /// an attempt is still young; gives up at the deadline.
    fn try_rpc(&mut self, id: u64) -> Result<(), String> {
        let Some(rpc) = self.rpcs.get(&id) else {
            return Ok(());
        };
        let timings = self.options.timings;
        if let Some((_, _, sent_us)) = rpc.attempt {
            if self.now_us < sent_us + timings.attempt_timeout_us {
                return Ok(());
            }
        }
        if self.now_us >= rpc.deadline_us {
            return self.complete_rpc(id, Response::Failed);
        }
        let shard = rpc.shard;
        let leaders = self.leaders(shard);
        if leaders.is_empty() {
            self.schedule(self.now_us + timings.poll_us, Wake::Rpc(id));
            return Ok(());
        }
        let target = leaders[self.random.index(leaders.len())];
        let (bytes, is_read) = (rpc.bytes.clone(), rpc.is_read);
        let group = &mut self.groups[shard];
        let submitted = if is_read {
            group.submit_read(target, bytes)
        } else {
            group.submit(target, bytes)
        }
        .map_err(|violation| format!("shard {shard}: {violation}"))?;
        match submitted {
            Ok(request_id) => {
                self.by_request.insert((shard, target, request_id), id);
                if let Some(rpc) = self.rpcs.get_mut(&id) {
                    rpc.attempt = Some((target, request_id, self.now_us));
                }
                self.schedule(self.now_us + timings.attempt_timeout_us, Wake::Rpc(id));
            }
            Err(_) => self.schedule(self.now_us + timings.poll_us, Wake::Rpc(id)),
        }
        Ok(())
    }

    fn on_reply(
        &mut self,
        shard: usize,
        reply: ledger_paxos::sim::ExternalReply,
    ) -> Result<(), String> {
        let Some(id) = self
            .by_request
            .remove(&(shard, reply.replica, reply.request_id))
        else {
            return Ok(());
        };
        let Some(rpc) = self.rpcs.get_mut(&id) else {
            return Ok(());
        };
        let Ok(bytes) = reply.result else {
            // Refused or not chosen: ask again (the same bytes) unless a newer attempt runs.
            if rpc
                .attempt
                .is_some_and(|(r, q, _)| (r, q) == (reply.replica, reply.request_id))
            {
                rpc.attempt = None;
                self.schedule(self.now_us + self.options.timings.poll_us, Wake::Rpc(id));
            }
            return Ok(());
        };
        let response = if rpc.is_read && Read::decode(&rpc.bytes) == Some(Read::Unresolved) {
            let (ledger_now, entries) = wire::decode_unresolved(&bytes)
                .ok_or_else(|| format!("shard {shard}: undecodable unresolved legs"))?;
            Response::Unresolved(Unresolved {
                ledger_now,
                entries,
            })
        } else if rpc.is_read {
            let reply = QueryReply::decode(&bytes)
                .map_err(|e| format!("shard {shard}: undecodable read reply: {e}"))?;
            Response::Query(reply)
        } else {
            let (status, body) = wire::decode_reply_envelope(&bytes)
                .ok_or_else(|| format!("shard {shard}: undecodable reply"))?;
            if status == ReplyStatus::Malformed {
                return Err(format!(
                    "shard {shard}: the state machine found an entry malformed"
                ));
            }
            match Reply::decode(body).map_err(|e| format!("shard {shard}: reply: {e}"))? {
                Reply::CreateTransfers(results) => Response::Transfers(results),
                Reply::CreateAccounts(results) => Response::Accounts(results),
                _ => return Err(format!("shard {shard}: unexpected reply kind")),
            }
        };
        self.trace.word(id ^ 0xA5A5 << 48);
        self.complete_rpc(id, response)
    }

    fn complete_rpc(&mut self, id: u64, response: Response) -> Result<(), String> {
        let Some(rpc) = self.rpcs.remove(&id) else {
            return Ok(());
        };
        let Some(job) = self.jobs.get_mut(&rpc.job) else {
            return Ok(());
        };
        if job.answers[rpc.index].is_some() {
            return Ok(());
        }
        job.answers[rpc.index] = Some(response);
        job.outstanding -= 1;
        if job.outstanding == 0 {
            return self.advance_job(rpc.job);
        }
        Ok(())
    }

    // ---- setup, clients, resolver ----------------------------------------------------------

    fn start_setup(&mut self) -> Result<(), String> {
        let (id, job) = self.insert_job(Owner::Setup, JobKind::Setup { round: 0 }, u64::MAX);
        self.jobs.insert(id, job);
        self.advance_job(id)
    }

    fn setup_finished(&mut self) {
        self.setup_done = true;
        for client in 0..self.clients.len() {
            let at = self.now_us + self.random.range(0, 10_000);
            self.schedule(
                at,
                Wake::Client {
                    client,
                    generation: 0,
                },
            );
        }
    }

    fn mint_id(&self, ledger: u32, shard: usize) -> u128 {
        // Routes to `shard`; below every customer id.
        (u128::from(ledger) * self.options.shards as u128 + shard as u128)
            * 4
            * self.options.shards as u128
            + shard as u128
    }

    fn setup_requests(&self, round: u8) -> Vec<Request> {
        let shards = self.options.shards;
        (0..shards)
            .map(|shard| {
                if round == 1 {
                    let mut accounts: Vec<Account> = self
                        .customers
                        .iter()
                        .filter(|a| self.router.shard_of(a.id) == shard)
                        .copied()
                        .collect();
                    for ledger in 1..=self.options.ledgers {
                        accounts.push(Account::new(
                            self.mint_id(ledger, shard),
                            ledger,
                            SETUP_MINT_CODE,
                        ));
                    }
                    Request::Accounts { shard, accounts }
                } else {
                    let transfers = self
                        .customers
                        .iter()
                        .filter(|a| self.router.shard_of(a.id) == shard)
                        .enumerate()
                        .map(|(index, a)| {
                            Transfer::new(
                                // Funding ids: below every client's.
                                (shard * 1_000 + index + 1) as u128,
                                self.mint_id(a.ledger, shard),
                                a.id,
                                self.options.opening_balance,
                                a.ledger,
                                1,
                            )
                        })
                        .collect();
                    Request::Transfers { shard, transfers }
                }
            })
            .collect()
    }

    fn on_client(&mut self, client: usize, generation: u64) -> Result<(), String> {
        let state = &self.clients[client];
        if state.generation != generation || state.busy {
            return Ok(());
        }
        let owner = Owner::Client { client, generation };
        let deadline = self.now_us + self.options.timings.request_timeout_us;
        let healed = self.now_us >= self.options.heal_us;
        if healed {
            // After the heal the clients only settle the workload's pending work, until a
            // margin before the end that leaves the resolver its bound.
            if self.now_us + SETTLE_MARGIN_US > self.end_us() {
                return Ok(());
            }
            if !self.settle(client, owner, deadline)? {
                self.schedule(self.now_us + 50_000, Wake::Client { client, generation });
            }
            return Ok(());
        }
        if let Some(transfers) = self.clients[client].retry.take() {
            self.stats.retried_calls += 1;
            self.clients[client].busy = true;
            return self.start_call(owner, transfers, deadline);
        }
        if self.random.chance(self.options.settle_permille)
            && self.settle(client, owner, deadline)?
        {
            return Ok(());
        }
        let draw = self.random.range(0, 1_000);
        let transfers = if draw < self.options.pending_permille {
            let mut transfer = self.draw_transfer(client, true, Kind::Pending);
            transfer.flags = TransferFlags::PENDING;
            if self.random.chance(150) {
                transfer.timeout = 1;
            }
            if self.random.chance(self.options.closing_permille) {
                // Closing its debit account, its credit account or both (checked at the end:
                // an account is closed iff a posted closing transfer names it).
                transfer.flags = transfer.flags.union(match self.random.range(0, 3) {
                    0 => TransferFlags::CLOSING_DEBIT,
                    1 => TransferFlags::CLOSING_CREDIT,
                    _ => TransferFlags::CLOSING_DEBIT.union(TransferFlags::CLOSING_CREDIT),
                });
                self.stats.closing_transfers += 1;
            }
            self.set_planned(transfer);
            self.stats.pending_transfers += 1;
            self.notebook.insert(
                transfer.id,
                (
                    Unsettled::Call {
                        transfers: vec![transfer],
                        chain: false,
                    },
                    Some(client),
                ),
            );
            vec![transfer]
        } else if draw < self.options.pending_permille + self.options.chain_permille {
            self.draw_chain(client)
        } else {
            let cross = self.random.chance(self.options.cross_permille);
            let count = if cross { self.random.range(1, 3) } else { 1 };
            (0..count)
                .map(|_| self.draw_transfer(client, cross, Kind::Plain))
                .collect()
        };
        self.clients[client].busy = true;
        self.start_call(owner, transfers, deadline)
    }

    /// Takes one item of the workload's pending work no client is settling and starts it:
    /// a retry of a pending call whose outcome is unknown, or a post (full or partial) or
    /// void of a committed pending transfer. `false` if there is none.
    fn settle(&mut self, client: usize, owner: Owner, deadline: u64) -> Result<bool, String> {
        let free: Vec<u128> = self
            .notebook
            .iter()
            .filter(|(_, (item, taker))| {
                let from_us = match item {
                    Unsettled::Open { from_us, .. } => *from_us,
                    Unsettled::Call { .. } => 0,
                };
                taker.is_none() && from_us <= self.now_us
            })
            .map(|(key, _)| *key)
            .collect();
        if free.is_empty() {
            return Ok(false);
        }
        let key = free[self.random.index(free.len())];
        let Some((item, taker)) = self.notebook.get_mut(&key) else {
            return Ok(false);
        };
        *taker = Some(client);
        let item = item.clone();
        self.clients[client].busy = true;
        match item {
            Unsettled::Call { transfers, .. } => {
                self.stats.retried_calls += 1;
                self.start_call(owner, transfers, deadline)?;
            }
            Unsettled::Open { t, post, .. } => {
                let post = if let Some(post) = post {
                    post
                } else {
                    let post = self.draw_post(client, t);
                    if let Some((Unsettled::Open { post: slot, .. }, _)) =
                        self.notebook.get_mut(&key)
                    {
                        *slot = Some(post);
                    }
                    post
                };
                self.stats.posts += 1;
                let (driven, next) = protocol::locate(self.router, post);
                let kind = JobKind::Locate {
                    driven,
                    transfers: vec![post],
                };
                let (id, job) = self.insert_job(owner, kind, deadline);
                match next {
                    Next::Send { requests, phase } => self.send_round(id, job, requests, phase)?,
                    Next::Done(located) => {
                        self.after_locate(owner, deadline, vec![post], &located)?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// A new id of `client`'s.
    fn next_id(&mut self, client: usize) -> u128 {
        let state = &mut self.clients[client];
        state.counter += 1;
        ((client as u128 + 1) << 48)
            | (u128::from(state.generation) << 32)
            | u128::from(state.counter)
    }

    /// A user's post (full or partial) or void of the committed pending transfer `t`,
    /// naming no account (so it is located).
    fn draw_post(&mut self, client: usize, t: u128) -> Transfer {
        let id = self.next_id(client);
        let plan = &self.planned[&t];
        let pending = plan.transfer;
        let (debit_shard, credit_shard) = (plan.debit_shard, plan.credit_shard);
        let choice = self.random.range(0, 3);
        let (flags, amount) = match choice {
            0 => (TransferFlags::POST_PENDING_TRANSFER, pending.amount),
            1 => (
                TransferFlags::POST_PENDING_TRANSFER,
                u128::from(self.random.range(1, 400)).min(pending.amount),
            ),
            _ => (TransferFlags::VOID_PENDING_TRANSFER, 0),
        };
        let post = Transfer {
            pending_id: t,
            flags,
            ..Transfer::new(id, 0, 0, amount, 0, 0)
        };
        self.planned.insert(
            id,
            Planned {
                kind: Kind::Post { t },
                transfer: post,
                debit_shard,
                credit_shard,
                answered: None,
            },
        );
        post
    }

    /// A linked chain of 2–3 transfers spanning shards: its first event crosses shards, the
    /// others may too; some are pending (never one crossing into the coordinator's shard,
    /// which the cluster refuses).
    fn draw_chain(&mut self, client: usize) -> Vec<Transfer> {
        let count = self.random.range(2, 4);
        let mut events = Vec::new();
        let mut coordinator = 0;
        for index in 0..count {
            let cross = index == 0 || self.random.chance(self.options.cross_permille);
            let mut event = self.draw_transfer(client, cross, Kind::Chain { head: 0 });
            if index == 0 {
                coordinator = self.router.shard_of(event.debit_account_id);
            }
            let (d, c) = (
                self.router.shard_of(event.debit_account_id),
                self.router.shard_of(event.credit_account_id),
            );
            if self.random.chance(400) && !(d != c && c == coordinator) {
                event.flags = TransferFlags::PENDING;
            }
            if index + 1 < count {
                event.flags = event.flags.union(TransferFlags::LINKED);
            }
            events.push(event);
        }
        let head = events[0].id;
        for event in &events {
            if let Some(plan) = self.planned.get_mut(&event.id) {
                plan.kind = Kind::Chain { head };
                plan.transfer = *event;
            }
        }
        self.stats.chains += 1;
        self.stats.chain_events += count;
        if events.iter().any(|event| event.flags.pending()) {
            self.notebook.insert(
                head,
                (
                    Unsettled::Call {
                        transfers: events.clone(),
                        chain: true,
                    },
                    Some(client),
                ),
            );
        }
        events
    }

    fn set_planned(&mut self, transfer: Transfer) {
        if let Some(plan) = self.planned.get_mut(&transfer.id) {
            plan.transfer = transfer;
        }
    }

    fn draw_transfer(&mut self, client: usize, cross: bool, kind: Kind) -> Transfer {
        let id = self.next_id(client);
        let debit = self.customers[self.random.index(self.customers.len())];
        let debit_shard = self.router.shard_of(debit.id);
        let candidates: Vec<&Account> = self
            .customers
            .iter()
            .filter(|a| {
                a.ledger == debit.ledger
                    && a.id != debit.id
                    && (self.router.shard_of(a.id) != debit_shard) == cross
            })
            .collect();
        let mut credit = candidates[self.random.index(candidates.len())].id;
        if cross && self.random.chance(self.options.missing_credit_permille) {
            let shard = self.router.shard_of(credit) as u128;
            credit = MISSING_ID_BASE * self.options.shards as u128 + shard;
        }
        let amount = u128::from(self.random.range(1, 400));
        let transfer = Transfer::new(id, debit.id, credit, amount, debit.ledger, 7);
        self.stats.transfers += 1;
        self.stats.cross_transfers += u64::from(cross);
        self.planned.insert(
            id,
            Planned {
                kind,
                transfer,
                debit_shard,
                credit_shard: self.router.shard_of(credit),
                answered: None,
            },
        );
        transfer
    }

    fn start_call(
        &mut self,
        owner: Owner,
        transfers: Vec<Transfer>,
        deadline: u64,
    ) -> Result<(), String> {
        let chain = transfers.len() > 1 && transfers[0].flags.linked();
        let cross = self.router.shard_of(transfers[0].debit_account_id)
            != self.router.shard_of(transfers[0].credit_account_id);
        if !cross {
            let kind = JobKind::Local {
                transfers,
                shard: None,
                sent: false,
            };
            let (id, job) = self.insert_job(owner, kind, deadline);
            self.jobs.insert(id, job);
            return self.advance_job(id);
        }
        let Owner::Client { client, .. } = owner else {
            return Ok(());
        };
        let known = &self.clients[client].bridges;
        let missing = if chain {
            missing_chain_bridges(self.router, std::slice::from_ref(&transfers), |id| {
                known.contains(&id)
            })
        } else {
            let crosses: Vec<Cross> = transfers
                .iter()
                .map(|transfer| Cross::new(self.router, *transfer))
                .collect();
            missing_bridges(self.router, &crosses, |id| known.contains(&id))
        };
        if missing.iter().all(Vec::is_empty) {
            if chain {
                let (driven, next) = protocol::chain(self.router, &transfers);
                let kind = JobKind::Chain { driven, transfers };
                let (id, job) = self.insert_job(owner, kind, deadline);
                return self.continue_chain(id, job, next);
            }
            let (driven, next) = protocol::call(self.router, &transfers);
            let (id, job) = self.insert_job(owner, JobKind::Call { driven, transfers }, deadline);
            return self.continue_call(id, job, next);
        }
        let mut requests = Vec::new();
        let mut created = Vec::new();
        for (shard, accounts) in missing.into_iter().enumerate() {
            if !accounts.is_empty() {
                created.push(accounts.iter().map(|account| account.id).collect());
                requests.push(Request::Accounts { shard, accounts });
            }
        }
        let kind = JobKind::Bridges {
            transfers,
            created,
            chain,
        };
        let (id, job) = self.insert_job(owner, kind, deadline);
        self.send_round(id, job, requests, None)
    }

    /// A client's call ended: record the answers, maybe retry a failed call, think, go on.
    fn call_answered(
        &mut self,
        owner: Owner,
        transfers: &[Transfer],
        results: Result<Vec<R>, String>,
    ) {
        let Owner::Client { client, generation } = owner else {
            return;
        };
        self.trace
            .word(transfers[0].id as u64 ^ u64::from(results.is_ok()) << 63);
        if self.options.verbose {
            let ids: Vec<u128> = transfers.iter().map(|t| t.id).collect();
            eprintln!(
                "{}us client {client}: {ids:?} answered {results:?}",
                self.now_us
            );
        }
        let results_ok = results.as_ref().ok().cloned();
        if let Ok(results) = results {
            for (transfer, result) in transfers.iter().zip(results) {
                if result.is_ok() || result.is_exists() {
                    self.stats.acknowledged += 1;
                } else {
                    self.stats.rejected += 1;
                }
                if let Some(planned) = self.planned.get_mut(&transfer.id) {
                    planned.answered = Some(result);
                }
            }
        } else {
            self.stats.failed_calls += 1;
            let noted = self.notebook.contains_key(&transfers[0].id)
                || self
                    .planned
                    .get(&transfers[0].id)
                    .is_some_and(|plan| matches!(plan.kind, Kind::Post { .. }));
            if !noted && self.random.chance(500) {
                self.clients[client].retry = Some(transfers.to_vec());
            }
        }
        self.note_answer(client, transfers, results_ok.as_deref());
        if self.clients[client].generation == generation {
            self.clients[client].busy = false;
            let at = self.now_us + self.random.range(0, self.options.timings.think_us);
            self.schedule(at, Wake::Client { client, generation });
        }
    }

    /// Updates the workload's notebook with a call's answer (`None`: no answer): a pending
    /// call answered becomes its committed pending transfers to settle (or nothing); a post
    /// or void answered with a final result settles its pending transfer. Otherwise the item
    /// goes back to the notebook for any client to take again.
    fn note_answer(&mut self, client: usize, transfers: &[Transfer], results: Option<&[R]>) {
        let first = transfers[0].id;
        let post_of = match self.planned.get(&first).map(|plan| plan.kind) {
            Some(Kind::Post { t }) => Some(t),
            _ => None,
        };
        let key = post_of.unwrap_or(first);
        let Some((item, taker)) = self.notebook.get_mut(&key) else {
            return;
        };
        if *taker != Some(client) {
            return;
        }
        *taker = None;
        let Some(results) = results else {
            return;
        };
        match item {
            Unsettled::Call { transfers, chain } => {
                let committed = if *chain {
                    results
                        .first()
                        .is_some_and(|r| r.is_ok() || *r == R::Exists)
                } else {
                    results.first().is_some_and(|r| r.is_ok() || r.is_exists())
                };
                let pending: Vec<(u128, u32)> = transfers
                    .iter()
                    .filter(|t| t.flags.pending())
                    .map(|t| (t.id, t.timeout))
                    .collect();
                self.notebook.remove(&key);
                if committed {
                    for (t, timeout) in pending {
                        // One with a timeout is left to expire: its user posts or voids it
                        // only after the resolver's bound past its deadline (a late post,
                        // answered `PendingTransferExpired`), or before the clients stop
                        // if that comes first.
                        let from_us = if timeout == 0 {
                            0
                        } else {
                            let late = self.options.resolution_bound_us + 100_000;
                            let last = self.end_us() - SETTLE_MARGIN_US - 100_000;
                            (self.now_us + u64::from(timeout) * 1_000_000 + late).min(last)
                        };
                        let item = Unsettled::Open {
                            t,
                            post: None,
                            from_us,
                        };
                        self.notebook.insert(t, (item, None));
                    }
                }
            }
            Unsettled::Open { post, .. } => {
                let result = results.first().copied().unwrap_or(R::Ok);
                if result.is_ok() {
                    self.stats.posts_ok += 1;
                }
                let settled = result.is_ok()
                    || result.is_exists()
                    || matches!(
                        result,
                        R::PendingTransferAlreadyPosted
                            | R::PendingTransferAlreadyVoided
                            | R::PendingTransferExpired
                    );
                if settled {
                    self.notebook.remove(&key);
                } else {
                    // Rejected (not found yet, say): a new post next time.
                    *post = None;
                }
            }
        }
    }

    /// Crashes whoever the case names, right after the call's step; `true` if the client
    /// itself crashed (the call is gone).
    fn inject_call_case(
        &mut self,
        owner: Owner,
        machine: &CallMachine,
        transfers: &[Transfer],
    ) -> bool {
        let coordinator = machine.first_live_coordinator();
        let participant = coordinator.map_or(0, |coordinator| {
            transfers
                .iter()
                .find(|t| self.router.shard_of(t.debit_account_id) == coordinator)
                .map_or(coordinator, |t| self.router.shard_of(t.credit_account_id))
        });
        self.inject_case(owner, coordinator, participant)
    }

    /// Crashes whoever the case names (the coordinator's or the participant's leader, or the
    /// client), right after a step; `true` if the client itself crashed (the call is gone).
    fn inject_case(
        &mut self,
        owner: Owner,
        coordinator: Option<usize>,
        participant: usize,
    ) -> bool {
        let Owner::Client { client, .. } = owner else {
            return false;
        };
        let Some(coordinator) = coordinator else {
            return false;
        };
        if self.now_us >= self.options.heal_us || !self.random.chance(self.options.case_permille) {
            return false;
        }
        let case = self.options.case;
        let shard = match case.who {
            Who::Client => {
                self.stats.cases[case.index()] += 1;
                if self.options.verbose {
                    eprintln!("{}us {case:?}: client {client} crashes", self.now_us);
                }
                self.trace.word(0xC11E_0000 | client as u64);
                self.crash_client(client);
                return true;
            }
            Who::CoordinatorLeader => coordinator,
            Who::ParticipantLeader => participant,
        };
        let Some(leader) = self.leader_of(shard) else {
            return false;
        };
        self.stats.cases[case.index()] += 1;
        if self.options.verbose {
            eprintln!(
                "{}us {case:?}: shard {shard} replica {leader} crashes",
                self.now_us
            );
        }
        self.trace
            .word(0xC1ED_0000 | (shard as u64) << 8 | leader as u64);
        self.groups[shard].crash(leader);
        let at = self.now_us + self.random.range(50_000, 600_000);
        self.schedule(
            at,
            Wake::Restart {
                shard,
                replica: leader,
            },
        );
        false
    }

    /// The client process dies: its calls, their requests and its finishing work are gone.
    /// It comes back a little later as a new incarnation with new ids.
    fn crash_client(&mut self, client: usize) {
        let dead: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, job)| matches!(job.owner, Owner::Client { client: c, .. } if c == client))
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.jobs.remove(id);
        }
        self.rpcs.retain(|_, rpc| !dead.contains(&rpc.job));
        let state = &mut self.clients[client];
        state.generation += 1;
        state.busy = false;
        state.retry = None;
        state.counter = 0;
        state.bridges.clear();
        let generation = state.generation;
        for (_, taker) in self.notebook.values_mut() {
            if *taker == Some(client) {
                *taker = None;
            }
        }
        let at = self.now_us + self.random.range(10_000, 300_000);
        self.schedule(at, Wake::Client { client, generation });
    }

    /// Every interval: unless the last scan is still running, scan every shard's unresolved
    /// legs (the core's resolver then says what is due). Like the cluster's resolver, a pass
    /// does not wait for the recoveries of earlier ones.
    fn on_resolver_pass(&mut self) -> Result<(), String> {
        let stopped = self.options.planted == Some(PlantedBug::NoResolver);
        if stopped || self.now_us + 1_000_000 > self.end_us() {
            return Ok(());
        }
        let at = self.now_us + self.options.timings.resolver_interval_us;
        self.schedule(at, Wake::ResolverPass);
        if self.scanning {
            return Ok(());
        }
        self.scanning = true;
        // Like the cluster's resolver: a shard that does not answer within one interval is
        // skipped this pass (what was known of it is kept).
        let deadline = self.now_us + self.options.timings.resolver_interval_us;
        let (id, job) = self.insert_job(Owner::Resolver, JobKind::Scan, deadline);
        let requests = protocol::scan(self.options.shards);
        self.send_round(id, job, requests, None)
    }

    fn after_scan(&mut self, answers: &[Response]) -> Result<(), String> {
        self.scanning = false;
        self.stats.resolver_passes += 1;
        let reads = protocol::scanned(answers);
        let now = Duration::from_micros(self.now_us);
        let recoveries = self.resolver.pass(self.router, now, &reads);
        if self.options.verbose {
            let counts: Vec<Option<usize>> = reads
                .iter()
                .map(|read| read.as_ref().map(|read| read.entries.len()))
                .collect();
            eprintln!(
                "{}us resolver: unresolved legs per shard {counts:?}, due {recoveries:?}",
                self.now_us
            );
        }
        // Like the cluster's resolver: each recovery for at most four intervals (or the
        // request timeout, if shorter), side by side, at most 16 at once (the others are due
        // again at the next pass).
        let timings = self.options.timings;
        let deadline =
            self.now_us + (4 * timings.resolver_interval_us).min(timings.request_timeout_us);
        for recovery in recoveries {
            if self.resolver.recoveries_running() >= crate::crossshard::RECOVERIES_PARALLEL {
                break;
            }
            self.stats.recovered_posts += recovery.posts.len() as u64;
            self.stats.recovered_chains += recovery.chains.len() as u64;
            self.stats.recovered_expiries += recovery.expiries.len() as u64;
            let pair = (recovery.debit_shard, recovery.credit_shard);
            let (driven, next) = protocol::recovery(self.router, recovery);
            let (id, job) =
                self.insert_job(Owner::Resolver, JobKind::Recovery(driven, pair), deadline);
            match next {
                Next::Send { requests, phase } => {
                    self.resolver.recovery_started(pair.0, pair.1);
                    self.send_round(id, job, requests, phase)?;
                }
                Next::Done(()) => {}
            }
        }
        Ok(())
    }

    /// Plants the configured bug into the requests about to be sent.
    fn plant(&self, owner: Owner, phase: Option<Phase>, requests: Vec<Request>) -> Vec<Request> {
        let Some(bug) = self.options.planted else {
            return requests;
        };
        let planting = match bug {
            PlantedBug::ParticipantPostsBeforeDecision => phase == Some(Phase::Vote),
            PlantedBug::ResolverAbortsCommitted => {
                owner == Owner::Resolver && phase == Some(Phase::Finish)
            }
            PlantedBug::NoResolver => false,
            PlantedBug::ResolverDropsTimeouts => {
                owner == Owner::Resolver && phase == Some(Phase::Decide)
            }
            PlantedBug::ParticipantVoidsUsersPost | PlantedBug::ChainFinishVoidsMembers => {
                phase == Some(Phase::Finish)
            }
        };
        if !planting {
            return requests;
        }
        requests
            .into_iter()
            .map(|request| {
                let Request::Transfers { shard, transfers } = request else {
                    return request;
                };
                let planted = self.plant_events(bug, shard, transfers);
                Request::Transfers {
                    shard,
                    transfers: planted,
                }
            })
            .collect()
    }

    /// The planted `bug`'s version of `transfers`, a submission to `shard`.
    fn plant_events(
        &self,
        bug: PlantedBug,
        shard: usize,
        transfers: Vec<Transfer>,
    ) -> Vec<Transfer> {
        let mut planted = Vec::with_capacity(2 * transfers.len());
        for transfer in transfers {
            match bug {
                PlantedBug::ParticipantPostsBeforeDecision => {
                    // The vote, then at once the post of the voted leg.
                    planted.push(transfer);
                    planted.push(Transfer {
                        id: transfer.id + SYSTEM_ID_MIN,
                        pending_id: transfer.id,
                        flags: TransferFlags::POST_PENDING_TRANSFER,
                        ..Transfer::new(0, 0, 0, u128::MAX, 0, 0)
                    });
                }
                PlantedBug::ParticipantVoidsUsersPost | PlantedBug::ChainFinishVoidsMembers => {
                    // A participant's application of a user's post, `x(t)`, or a
                    // chain member's post, voids.
                    let hit = transfer.flags.post_pending_transfer()
                        && if bug == PlantedBug::ParticipantVoidsUsersPost {
                            transfer.id >= 3 * SYSTEM_ID_MIN
                        } else {
                            self.is_chain_member(transfer.id)
                        };
                    planted.push(if hit { voided(transfer) } else { transfer });
                }
                PlantedBug::ResolverDropsTimeouts => {
                    // A commit marker `res(t)` (no pending id, neither post nor void).
                    let marker = (2 * SYSTEM_ID_MIN..3 * SYSTEM_ID_MIN).contains(&transfer.id)
                        && transfer.pending_id == 0
                        && !transfer.flags.post_pending_transfer()
                        && !transfer.flags.void_pending_transfer();
                    planted.push(if marker {
                        Transfer {
                            user_data_64: 0,
                            ..transfer
                        }
                    } else {
                        transfer
                    });
                }
                PlantedBug::ResolverAbortsCommitted | PlantedBug::NoResolver => {
                    let post = transfer.flags.post_pending_transfer();
                    planted.push(
                        if post && self.is_participant_shard(shard, transfer.pending_id) {
                            voided(transfer)
                        } else {
                            transfer
                        },
                    );
                }
            }
        }
        planted
    }

    /// Whether `resolution` is `res(t)` of a chain's event `t` other than its head.
    fn is_chain_member(&self, resolution: u128) -> bool {
        let t = resolution.wrapping_sub(2 * SYSTEM_ID_MIN);
        self.planned
            .get(&t)
            .is_some_and(|plan| matches!(plan.kind, Kind::Chain { head } if head != t))
    }

    fn is_participant_shard(&self, shard: usize, leg: u128) -> bool {
        let t = leg.wrapping_sub(ledger_core::SYSTEM_ID_MIN);
        self.planned
            .get(&t)
            .is_some_and(|planned| planned.credit_shard == shard)
    }

    fn on_sample(&mut self) -> Result<(), String> {
        if self.now_us + 100_000 <= self.end_us() {
            self.schedule(self.now_us + 100_000, Wake::Sample);
        }
        for (shard, group) in self.groups.iter().enumerate() {
            for replica in 0..group.replica_count() {
                if let Some(machine) = group.state_machine(replica) {
                    machine.probe().check_invariants().map_err(|violation| {
                        format!("I1: shard {shard} replica {replica}: {violation}")
                    })?;
                }
            }
            self.oracles[shard]
                .machine()
                .probe()
                .check_invariants()
                .map_err(|violation| format!("I1: shard {shard} (chosen log): {violation}"))?;
        }
        Ok(())
    }

    // ---- the end -------------------------------------------------------------------------

    fn final_checks(&mut self) -> Result<(), String> {
        self.stats.paxos = SimStats::default();
        for group in &self.groups {
            add_paxos_stats(&mut self.stats.paxos, &group.stats);
        }
        for (shard, group) in self.groups.iter_mut().enumerate() {
            group.check_end().map_err(|violation| {
                format!("shard {shard}: {violation}\n{}", group.describe_replicas())
            })?;
        }
        if !self.setup_done {
            return Err("the setup never completed".to_string());
        }
        for (shard, since) in self.leader_seen.iter().enumerate() {
            let bound_us = self.options.heal_us + LEADER_BOUND_US;
            if since.is_none_or(|since| since > bound_us) {
                return Err(format!(
                    "I11: shard {shard} had no leader within {LEADER_BOUND_US}us of the heal \
                     (first at {since:?})"
                ));
            }
        }
        for (shard, group) in self.groups.iter().enumerate() {
            let oracle = self.oracles[shard].machine().probe().digest();
            for replica in 0..group.replica_count() {
                let Some(machine) = group.state_machine(replica) else {
                    continue;
                };
                let probe = machine.probe();
                if probe.digest() != oracle {
                    return Err(format!(
                        "I5: shard {shard} replica {replica} ends at {:?}, the chosen log at \
                         {oracle:?}",
                        probe.digest()
                    ));
                }
                if probe.unresolved_leg_count() != 0 {
                    return Err(format!(
                        "I10: shard {shard} replica {replica} ends with {} unresolved legs",
                        probe.unresolved_leg_count()
                    ));
                }
            }
        }
        let finals: Vec<&LedgerMachine> = self
            .groups
            .iter()
            .enumerate()
            .map(|(shard, group)| {
                (0..group.replica_count())
                    .find_map(|replica| group.state_machine(replica))
                    .ok_or_else(|| format!("shard {shard}: no replica runs at the end"))
            })
            .collect::<Result<_, _>>()?;
        let (committed, aborted) = self.tracker.check_final(&finals, &self.planned)?;
        self.stats.committed = committed;
        self.stats.aborted = aborted;
        self.tracker.check_conservation(
            &self.oracles,
            &self.customers,
            self.options.opening_balance,
        )?;
        self.tracker.check_nothing_in_flight()?;
        Tracker::check_no_pending(&finals, &self.customers)?;
        self.stats.closed_accounts =
            Tracker::check_closed(&finals, &self.customers, &self.planned)?;
        self.stats.expired = Tracker::check_expiries_never_early(&finals, &self.planned)?;
        for (index, count) in self.stats.cases.iter().enumerate() {
            self.trace.word(*count ^ (index as u64) << 32);
        }
        Ok(())
    }
}

/// `transfer` (a post of a pending transfer) as a void instead.
fn voided(transfer: Transfer) -> Transfer {
    Transfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        amount: 0,
        ..transfer
    }
}

fn check_setup(round: u8, answers: &[Response]) -> Result<(), String> {
    for answer in answers {
        let ok = match answer {
            Response::Accounts(results) => results
                .iter()
                .all(|r| *r == CreateAccountResult::Ok || *r == CreateAccountResult::Exists),
            Response::Transfers(results) => results.iter().all(|r| r.is_ok() || r.is_exists()),
            _ => false,
        };
        if !ok {
            return Err(format!("setup round {round} failed: {answer:?}"));
        }
    }
    Ok(())
}
