//! The cluster: n shards, each a Paxos group of 3 (or 5) ledger replicas in this process, each
//! replica with its own directory. Opening an existing directory recovers every replica from
//! its WAL (I2, I8).

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};
use ledger_paxos::driver::Group;
use ledger_wal::{SyncPolicy, WalOptions};
use parking_lot::Mutex;

use crate::backend::{Backend, GroupBackend};
use crate::client::Client;
use crate::clock;
use crate::config::ClusterConfig;
use crate::crossshard::{self, CrossShard, CrossShardStep};
use crate::error::{Result, ShardError};
use crate::machine::{LedgerMachine, MachineProbe};
use crate::router::Router;
use crate::shard::{self, SUBMISSIONS_QUEUED_MAX, ShardContext, Submission};

/// The file at the top of a cluster directory that pins its shape.
pub const MANIFEST_FILE_NAME: &str = "cluster.manifest";
const MANIFEST_HEADER: &str = "paxos-ledger cluster v1";

/// What one replica has applied, for comparing replicas (I5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaState {
    /// The replica's index in its shard.
    pub replica: usize,
    /// Whether the replica runs (not crashed by [`Cluster::crash_replica`]).
    pub running: bool,
    /// The last slot its state machine applied.
    pub applied_slot: u64,
    /// The digest of its ledger state.
    pub digest: u64,
}

/// The probes of one shard's replicas, filled in as the driver builds each state machine.
#[derive(Default)]
struct ProbeRegistry {
    /// Replica indexes whose state machines are about to be built, in build order.
    expected: VecDeque<usize>,
    probes: Vec<Option<MachineProbe>>,
    running: Vec<bool>,
}

pub(crate) struct ShardHandle {
    pub(crate) context: Arc<ShardContext>,
    pub(crate) submissions: Sender<Submission>,
    group: Option<Arc<Group>>,
    registry: Arc<Mutex<ProbeRegistry>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct ClusterInner {
    pub(crate) config: ClusterConfig,
    pub(crate) router: Router,
    pub(crate) shards: Vec<ShardHandle>,
    pub(crate) shutdown: Receiver<()>,
    shutdown_sender: Mutex<Option<Sender<()>>>,
    /// Cross-shard state: known bridge accounts, test stop points.
    pub(crate) crossshard: CrossShard,
    /// The cross-shard resolver and finisher threads (I10).
    resolver: Mutex<Vec<JoinHandle<()>>>,
}

/// A running cluster. Dropping it without [`Cluster::shutdown`] also stops it.
///
/// # Examples
///
/// ```
/// use ledger_core::{Account, Transfer};
/// use ledger_shard::{Cluster, ClusterConfig};
/// # let dir = std::env::temp_dir().join(format!("ledger-shard-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
///
/// let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1))?;
/// let client = cluster.client();
/// let results = client.create_accounts(&[Account::new(1, 1, 1), Account::new(2, 1, 1)])?;
/// assert!(results.iter().all(|result| result.is_ok()));
/// let results = client.create_transfers(&[Transfer::new(10, 1, 2, 500, 1, 1)])?;
/// assert!(results[0].is_ok());
/// let accounts = client.lookup_accounts(&[1, 2])?;
/// assert_eq!(accounts[1].credits_posted, 500);
/// cluster.shutdown()?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

impl Cluster {
    /// Opens (or creates) the cluster in `config.dir()`, recovering every replica from disk,
    /// and starts it. Returns once every replica runs; a leader is elected shortly after
    /// (calls wait for it).
    ///
    /// # Errors
    ///
    /// [`ShardError::InvalidConfig`] for bad settings or a directory holding a cluster of
    /// another shape; [`ShardError::Io`] or [`ShardError::Paxos`] if a replica cannot open or
    /// recover its WAL.
    pub fn open(config: ClusterConfig) -> Result<Self> {
        config.validate()?;
        let nonce_epoch = manifest_open(&config)?;
        let (shutdown_sender, shutdown) = channel::bounded(0);
        let mut shards = Vec::with_capacity(config.shard_count);
        for shard in 0..config.shard_count {
            shards.push(open_shard(&config, shard, nonce_epoch, &shutdown)?);
        }
        let router = Router::new(config.shard_count);
        let inner = ClusterInner {
            config,
            router,
            shards,
            shutdown,
            shutdown_sender: Mutex::new(Some(shutdown_sender)),
            crossshard: CrossShard::default(),
            resolver: Mutex::new(Vec::new()),
        };
        let inner = Arc::new(inner);
        if inner.config.shard_count > 1 {
            start_resolver(&inner)?;
        }
        Ok(Self { inner })
    }

    /// A client: cheap to clone, `Send + Sync`, blocking calls.
    pub fn client(&self) -> Client {
        Client::new(Arc::clone(&self.inner))
    }

    /// The configuration the cluster runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The replica leading `shard`, if one is known.
    pub fn leader(&self, shard: usize) -> Option<usize> {
        self.inner.shards.get(shard)?.context.backend.leader()
    }

    /// Crashes one replica: its thread stops and whatever it had not fsynced is gone, as with
    /// `kill -9` of a single machine. For demos and tests.
    ///
    /// # Errors
    ///
    /// [`ShardError::InvalidRequest`] if the shard or replica does not exist.
    pub fn crash_replica(&self, shard: usize, replica: usize) -> Result<()> {
        let (handle, group) = self.group(shard, replica)?;
        group.crash(replica);
        handle.registry.lock().running[replica] = false;
        Ok(())
    }

    /// Restarts a crashed replica from its directory; it catches up from its peers.
    ///
    /// # Errors
    ///
    /// [`ShardError::InvalidRequest`] if the shard or replica does not exist; the driver's
    /// error if the replica cannot recover its WAL.
    pub fn restart_replica(&self, shard: usize, replica: usize) -> Result<()> {
        let (handle, group) = self.group(shard, replica)?;
        handle.registry.lock().expected.push_back(replica);
        let restarted = group.restart(replica);
        let mut registry = handle.registry.lock();
        registry.expected.retain(|&expected| expected != replica);
        restarted?;
        registry.running[replica] = true;
        Ok(())
    }

    fn group(&self, shard: usize, replica: usize) -> Result<(&ShardHandle, &Group)> {
        let invalid = || ShardError::InvalidRequest {
            reason: format!("no replica {replica} in shard {shard}"),
        };
        let handle = self.inner.shards.get(shard).ok_or_else(invalid)?;
        if replica >= self.inner.config.replica_count {
            return Err(invalid());
        }
        let group = handle.group.as_deref().ok_or_else(invalid)?;
        Ok((handle, group))
    }

    /// What each replica of `shard` has applied, and its state digest (I5). Replicas whose
    /// state machine has not been built yet are left out.
    pub fn replica_states(&self, shard: usize) -> Vec<ReplicaState> {
        let Some(handle) = self.inner.shards.get(shard) else {
            return Vec::new();
        };
        let registry = handle.registry.lock();
        let probes: Vec<_> = registry.probes.iter().cloned().enumerate().collect();
        let running = registry.running.clone();
        drop(registry);
        probes
            .into_iter()
            .filter_map(|(replica, probe)| {
                let (applied_slot, digest) = probe?.digest();
                Some(ReplicaState {
                    replica,
                    running: running[replica],
                    applied_slot,
                    digest,
                })
            })
            .collect()
    }

    /// Waits until every running replica of every shard has applied the same slots and holds
    /// the same state digest (a restarted replica has caught up); returns each shard's digest.
    ///
    /// # Errors
    ///
    /// [`ShardError::Timeout`] naming the first shard whose replicas still differ after
    /// `timeout`; [`ShardError::Shutdown`] if the cluster stops meanwhile.
    pub fn wait_replicas_identical(&self, timeout: Duration) -> Result<Vec<u64>> {
        let deadline = clock::now() + timeout;
        let mut digests = Vec::with_capacity(self.inner.shards.len());
        for shard in 0..self.inner.shards.len() {
            loop {
                let states: Vec<_> = self
                    .replica_states(shard)
                    .into_iter()
                    .filter(|s| s.running)
                    .collect();
                let first = states.first().copied();
                let identical = first.is_some_and(|first| {
                    states
                        .iter()
                        .all(|s| (s.applied_slot, s.digest) == (first.applied_slot, first.digest))
                });
                if let (true, Some(first)) = (identical, first) {
                    digests.push(first.digest);
                    break;
                }
                if clock::now() >= deadline {
                    return Err(ShardError::Timeout { shard });
                }
                match self.inner.shutdown.recv_timeout(Duration::from_millis(5)) {
                    Err(channel::RecvTimeoutError::Timeout) => {}
                    _ => return Err(ShardError::Shutdown),
                }
            }
        }
        Ok(digests)
    }

    /// Runs the ledger's invariant checks (I1, I7) on every running replica.
    ///
    /// # Errors
    ///
    /// A description of the first violation found.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for (shard, handle) in self.inner.shards.iter().enumerate() {
            let registry = handle.registry.lock();
            for (replica, probe) in registry.probes.iter().enumerate() {
                if let (Some(probe), true) = (probe, registry.running[replica]) {
                    probe
                        .check_invariants()
                        .map_err(|error| format!("shard {shard} replica {replica}: {error}"))?;
                }
            }
        }
        Ok(())
    }

    /// For tests of the cross-shard protocol: every cross-shard call stops driving its transfers
    /// after `step` and fails with [`ShardError::Timeout`], as if the calling process had died
    /// there; the cluster's resolver then finishes them. `None` restores normal operation.
    pub fn stop_cross_shard_after(&self, step: Option<CrossShardStep>) {
        self.inner.crossshard.set_stop_after(step);
    }

    /// The number of cross-shard legs not resolved yet, summed over shards (each shard counted
    /// by its running replica that has applied the most), with the protocol work still owed
    /// to users' cross-shard pending transfers (a post not yet applied on both sides, a
    /// timeout not yet enforced) and to chains spanning shards (records not yet acknowledged).
    /// Zero once all of it has ended on both sides; a user's pending transfer without timeout
    /// stays pending (on both sides) without counting here. Plain bridges then net to zero
    /// (I1, I10).
    pub fn unresolved_cross_shard_legs(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|handle| {
                let registry = handle.registry.lock();
                registry
                    .probes
                    .iter()
                    .zip(&registry.running)
                    .filter_map(|(probe, &running)| probe.as_ref().filter(|_| running))
                    .max_by_key(|probe| probe.applied_slot())
                    .map_or(0, MachineProbe::unresolved_leg_count)
            })
            .sum()
    }

    /// Stops the cluster: calls in flight and later calls answer [`ShardError::Shutdown`]
    /// (their events may or may not have committed; reopening and retrying the same ids tells).
    /// Every replica stops; what was acknowledged is durable (I2).
    ///
    /// # Errors
    ///
    /// [`ShardError::Io`] if a proposer thread had panicked (a bug).
    pub fn shutdown(self) -> Result<()> {
        self.inner.stop()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.inner.stop();
    }
}

impl ClusterInner {
    fn stop(&self) -> Result<()> {
        let Some(shutdown_sender) = self.shutdown_sender.lock().take() else {
            return Ok(()); // Already stopped.
        };
        drop(shutdown_sender);
        let mut panicked = false;
        for thread in self.resolver.lock().drain(..) {
            panicked |= thread.join().is_err();
        }
        for handle in &self.shards {
            for worker in handle.workers.lock().drain(..) {
                panicked |= worker.join().is_err();
            }
            if let Some(group) = &handle.group {
                group.shutdown();
            }
        }
        if panicked {
            return Err(ShardError::Io(std::io::Error::other(
                "a proposer thread panicked",
            )));
        }
        Ok(())
    }
}

fn open_shard(
    config: &ClusterConfig,
    shard: usize,
    nonce_epoch: u64,
    shutdown: &Receiver<()>,
) -> Result<ShardHandle> {
    let dirs: Vec<_> = (0..config.replica_count)
        .map(|r| config.replica_dir(shard, r))
        .collect();
    for dir in &dirs {
        fs::create_dir_all(dir)?;
    }
    let registry = Arc::new(Mutex::new(ProbeRegistry {
        expected: (0..config.replica_count).collect(),
        probes: vec![None; config.replica_count],
        running: vec![true; config.replica_count],
    }));
    let factory_registry = Arc::clone(&registry);
    let (account_count_max, transfer_count_max) = config.ledger_capacity;
    let make_state_machine = move || {
        let machine = LedgerMachine::with_capacity(account_count_max, transfer_count_max);
        let mut registry = factory_registry.lock();
        if let Some(replica) = registry.expected.pop_front() {
            registry.probes[replica] = Some(machine.probe());
        }
        machine
    };
    let wal_options = WalOptions {
        sync: if config.fsync {
            SyncPolicy::EveryWrite
        } else {
            SyncPolicy::NeverUnsafe
        },
        ..WalOptions::default()
    };
    let group = Group::open_with(dirs, paxos_config(config), wal_options, make_state_machine)?;
    let group = Arc::new(group);
    registry.lock().expected.clear();
    let backend: Arc<dyn Backend> = Arc::new(GroupBackend {
        group: Arc::clone(&group),
    });
    let (handle_submissions, context) =
        shard_context(config, shard, backend, nonce_epoch, shutdown);
    let workers = shard::spawn_proposers(&context, config.proposers_per_shard)?;
    Ok(ShardHandle {
        context,
        submissions: handle_submissions,
        group: Some(group),
        registry,
        workers: Mutex::new(workers),
    })
}

pub(crate) fn shard_context(
    config: &ClusterConfig,
    shard: usize,
    backend: Arc<dyn Backend>,
    nonce_epoch: u64,
    shutdown: &Receiver<()>,
) -> (Sender<Submission>, Arc<ShardContext>) {
    let (submissions_sender, submissions) = channel::bounded(SUBMISSIONS_QUEUED_MAX);
    let context = Arc::new(ShardContext {
        shard,
        backend,
        submissions,
        shutdown: shutdown.clone(),
        attempt_timeout: config.attempt_timeout,
        nonce_epoch,
        nonce_counter: AtomicU64::new(0),
    });
    (submissions_sender, context)
}

fn paxos_config(config: &ClusterConfig) -> ledger_paxos::Config {
    let mut paxos = ledger_paxos::Config::new(0, config.replica_count);
    let tick_ms = paxos.tick_interval_ms;
    let ticks = |duration: Duration| (duration.as_millis() as u64).div_ceil(tick_ms).max(1);
    paxos.heartbeat_interval_ticks = ticks(config.heartbeat_interval);
    paxos.election_timeout_min_ticks = ticks(config.election_timeout);
    paxos.election_timeout_max_ticks = 2 * paxos.election_timeout_min_ticks;
    paxos
}

/// Checks or creates the manifest, bumps its open counter durably, and returns the new count:
/// the high half of every nonce this open issues, so nonces never repeat across opens.
fn manifest_open(config: &ClusterConfig) -> Result<u64> {
    fs::create_dir_all(&config.dir)?;
    let path = config.dir.join(MANIFEST_FILE_NAME);
    let open_count = match fs::read_to_string(&path) {
        Ok(text) => manifest_parse(&path, &text, config)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error.into()),
    };
    let open_count = open_count + 1;
    let text = format!(
        "{MANIFEST_HEADER}\nshards={}\nreplicas={}\nopens={open_count}\n",
        config.shard_count, config.replica_count
    );
    manifest_write(&config.dir, &path, text.as_bytes())?;
    Ok(open_count)
}

fn manifest_parse(path: &Path, text: &str, config: &ClusterConfig) -> Result<u64> {
    let bad = |reason: &str| ShardError::Manifest {
        path: path.into(),
        reason: reason.into(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        return Err(bad("not a paxos-ledger cluster manifest"));
    }
    let mut field = |name: &str| -> Result<u64> {
        let line = lines.next().ok_or_else(|| bad("truncated"))?;
        let value = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='));
        value
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| bad("malformed field"))
    };
    let (shards, replicas, opens) = (field("shards")?, field("replicas")?, field("opens")?);
    if shards != config.shard_count as u64 || replicas != config.replica_count as u64 {
        return Err(ShardError::InvalidConfig {
            reason: format!(
                "{} holds a cluster of {shards} shards x {replicas} replicas; asked for {} x {} \
                 (accounts would be routed to the wrong shards)",
                config.dir.display(),
                config.shard_count,
                config.replica_count
            ),
        });
    }
    Ok(opens)
}

/// Writes the manifest so that a crash at any byte leaves the old or the new one: temp file,
/// fsync, rename, fsync the directory.
fn manifest_write(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = dir.join(format!("{MANIFEST_FILE_NAME}.tmp"));
    let mut file = fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
impl Cluster {
    /// A cluster whose shards are the given backends (no Paxos groups, no disks): for testing
    /// the client machinery alone.
    pub(crate) fn open_with_backends(
        config: ClusterConfig,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Result<Self> {
        config.validate()?;
        assert_eq!(backends.len(), config.shard_count);
        let (shutdown_sender, shutdown) = channel::bounded(0);
        let mut shards = Vec::new();
        for (shard, backend) in backends.into_iter().enumerate() {
            let (submissions, context) = shard_context(&config, shard, backend, 1, &shutdown);
            let workers = shard::spawn_proposers(&context, config.proposers_per_shard)?;
            shards.push(ShardHandle {
                context,
                submissions,
                group: None,
                registry: Arc::new(Mutex::new(ProbeRegistry::default())),
                workers: Mutex::new(workers),
            });
        }
        let inner = ClusterInner {
            router: Router::new(config.shard_count),
            config,
            shards,
            shutdown,
            shutdown_sender: Mutex::new(Some(shutdown_sender)),
            crossshard: CrossShard::default(),
            resolver: Mutex::new(Vec::new()),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

/// Starts the cross-shard resolver and finisher threads, which hold the cluster until
/// [`ClusterInner::stop`].
fn start_resolver(inner: &Arc<ClusterInner>) -> Result<()> {
    let resolver_inner = Arc::clone(inner);
    let resolver = std::thread::Builder::new()
        .name("crossshard-resolver".into())
        .spawn(move || crossshard::resolver_run(&resolver_inner))
        .map_err(ShardError::Io)?;
    inner.resolver.lock().push(resolver);
    let finisher_inner = Arc::clone(inner);
    let finisher = std::thread::Builder::new()
        .name("crossshard-finisher".into())
        .spawn(move || crossshard::finisher_run(&finisher_inner))
        .map_err(ShardError::Io)?;
    inner.resolver.lock().push(finisher);
    Ok(())
}

#[cfg(test)]
#[path = "cluster_test.rs"]
mod tests;
