//! The inventory's cost on this machine with 500 extra processes: one diff cycle (the
//! fast tables read and compared, every 10 s by default) and one full snapshot (hourly),
//! in wall time and in CPU time of this process (user + system, from /proc/self/stat).
//!
//! `cargo bench -p yagura-agent --bench inventory` — figures in docs/benchmarks.md.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use yagura_agent::inventory::observe::{self, Roots};
use yagura_agent::inventory::processes::ExeHasher;
use yagura_agent::tail::EventContext;

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    yagura_agent::health::cpu_seconds().unwrap_or(0.0)
}

fn measure(rounds: u32, mut work: impl FnMut() -> usize) -> (Duration, f64, usize) {
    let cpu = cpu_seconds();
    let started = Instant::now();
    let mut items = 0;
    for _ in 0..rounds {
        items = work();
    }
    (
        started.elapsed() / rounds,
        (cpu_seconds() - cpu) / f64::from(rounds),
        items,
    )
}

fn main() {
    let mut children: Vec<Child> = (0..500)
        .filter_map(|_| Command::new("sleep").arg("600").spawn().ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let roots = Roots::default();
    let context = EventContext {
        host_name: "bench".into(),
        agent_id: uuid::Uuid::now_v7(),
    };
    let mut hasher = ExeHasher::new();
    // The first observation hashes every executable once (the cache then holds them).
    let first = Instant::now();
    let mut last = observe::observe(&roots, &mut hasher);
    println!(
        "first observation (hashing every executable): {:.1} ms, {} processes",
        first.elapsed().as_secs_f64() * 1000.0,
        last.processes.len()
    );
    let (wall, cpu, processes) = measure(50, || {
        let now = observe::observe_since(&roots, &mut hasher, Some(&last));
        let _ = observe::changes(&context, &last, &now);
        let n = now.processes.len();
        last = now;
        n
    });
    println!(
        "diff cycle: {:.1} ms wall, {:.1} ms CPU ({processes} processes; at a 10 s interval {:.3}% of a core)",
        wall.as_secs_f64() * 1000.0,
        cpu * 1000.0,
        cpu / 10.0 * 100.0
    );
    let (wall, cpu, events) = measure(5, || {
        observe::snapshot(&context, &roots, &mut hasher).0.len()
    });
    println!(
        "full snapshot: {:.1} ms wall, {:.1} ms CPU ({events} events)",
        wall.as_secs_f64() * 1000.0,
        cpu * 1000.0
    );
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
