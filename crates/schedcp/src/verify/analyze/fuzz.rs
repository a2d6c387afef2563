//! Fuzzing the ELF and BTF readers (issue 17, finding 9): mutations of
//! real BPF objects — the probes this build compiles — must be read or
//! refused, never panic. Cases: `SCHEDCP_FUZZ_CASES` (default 5000).

use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};

use super::{btf, code, elf};

const SEEDS: [&[u8]; 3] = [
    include_bytes!(concat!(env!("OUT_DIR"), "/probes/scp_runqlat.bpf.o")),
    include_bytes!(concat!(env!("OUT_DIR"), "/probes/scp_cputime.bpf.o")),
    include_bytes!(concat!(env!("OUT_DIR"), "/probes/scp_schedevents.bpf.o")),
];

fn cases() -> u32 {
    std::env::var("SCHEDCP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

/// A seed with a few bytes overwritten, or cut short.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..SEEDS.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(seed, writes, cut)| {
            let mut d = SEEDS[seed].to_vec();
            for (at, b) in writes {
                let i = at.index(d.len());
                d[i] = b;
            }
            if let Some(c) = cut {
                d.truncate(c.index(d.len()));
            }
            d
        })
}

/// Read `data` the way `analyze` does, up to libbpf.
fn read(data: &[u8], dir: &std::path::Path) {
    if let Ok(e) = elf::Elf::parse(data) {
        let _ = code::Code::build(&e);
        let path = dir.join("o.bpf.o");
        std::fs::write(&path, data).unwrap();
        if let Ok(b) = btf::ObjectBtf::open(&path) {
            let _ = b.externs();
            let _ = b.struct_ops(&e);
        }
    }
}

#[test]
fn elf_and_btf_readers_survive_mutated_objects() {
    let dir = tempfile::tempdir().unwrap();
    for s in SEEDS {
        let e = elf::Elf::parse(s).expect("a seed parses");
        code::Code::build(&e).expect("a seed's code builds");
    }
    let t = std::time::Instant::now();
    let mut runner = TestRunner::new(RunConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunConfig::default()
    });
    runner
        .run(&mutated(), |d| {
            read(&d, dir.path());
            Ok(())
        })
        .unwrap();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..4096), |d| {
            read(&d, dir.path());
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz elf+btf: 2 x {} inputs in {:.2} s",
        cases(),
        t.elapsed().as_secs_f64()
    );
}
