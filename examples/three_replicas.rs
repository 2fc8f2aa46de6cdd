//! Runs the example three-replica cluster (filled in as the crates land).

fn main() {
    println!("paxos-ledger: the three-replica example arrives with the cluster crate");
}
