//! Tests of the PostgreSQL harness of the end-to-end tests (tests/common/pg.rs): one server per
//! process, shared by concurrent tests, databases created idempotently, the per-directory
//! database stable across calls, and errors that say what failed.

mod common;

use std::path::Path;
use std::time::Instant;

use common::pg::{self, PgCluster};

fn cluster() -> &'static PgCluster {
    let started = Instant::now();
    let pg = pg::cluster().unwrap_or_else(|e| panic!("PostgreSQL for the tests: {e}"));
    eprintln!("pg::cluster() returned after {:?}", started.elapsed());
    pg
}

#[test]
fn two_databases_answer_select_1() {
    let pg = cluster();
    let a = pg
        .create_database("harness_a")
        .unwrap_or_else(|e| panic!("{e}"));
    let b = pg
        .create_database("harness_b")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, pg.url("harness_a"));
    assert_eq!(b, pg.url("harness_b"));
    assert!(a.starts_with("postgres://postgres@127.0.0.1:"), "{a}");
    assert!(a.ends_with("/harness_a"), "{a}");
    for db in ["harness_a", "harness_b"] {
        assert_eq!(
            pg.psql(db, "SELECT 1").unwrap_or_else(|e| panic!("{e}")),
            "1"
        );
        assert_eq!(
            pg.psql(db, "SELECT current_database()")
                .unwrap_or_else(|e| panic!("{e}")),
            db
        );
    }
    // Idempotent: a second create of an existing database is fine and gives the same URL.
    assert_eq!(
        pg.create_database("harness_a")
            .unwrap_or_else(|e| panic!("{e}")),
        a
    );
    // The server keeps the settings the harness gives it.
    assert_eq!(pg.psql("harness_a", "SHOW fsync").unwrap(), "on");
    assert_eq!(pg.psql("harness_a", "SHOW max_connections").unwrap(), "300");
    assert_eq!(
        pg.psql("harness_a", "SHOW port").unwrap(),
        pg.port().to_string()
    );
}

#[test]
fn database_for_is_stable_per_path_and_differs_between_paths() {
    let pg = cluster();
    let one = Path::new("/tmp/claimledger-test-one");
    let two = Path::new("/tmp/claimledger-test-two");
    let first = pg.database_for(one).unwrap_or_else(|e| panic!("{e}"));
    let again = pg.database_for(one).unwrap_or_else(|e| panic!("{e}"));
    let other = pg.database_for(two).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, again);
    assert_ne!(first, other);
    let name = first.rsplit('/').next().unwrap();
    assert!(name.starts_with("t_") && name.len() == 18, "{name}");
    // What a table written through the first URL holds is there when it is asked for again.
    pg.psql(
        name,
        "CREATE TABLE IF NOT EXISTS kept (v int); INSERT INTO kept VALUES (7)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let name_again = pg
        .database_for(one)
        .unwrap_or_else(|e| panic!("{e}"))
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        pg.psql(&name_again, "SELECT sum(v) FROM kept").unwrap(),
        "7"
    );
}

#[test]
fn concurrent_callers_share_one_server_and_create_databases_safely() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let pg = cluster();
                // Half the threads race on one name, the others each create their own.
                let name = if i % 2 == 0 {
                    "harness_shared".to_string()
                } else {
                    format!("harness_own_{i}")
                };
                let url = pg.create_database(&name).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(pg.psql(&name, "SELECT 1").unwrap(), "1");
                (pg as *const PgCluster as usize, url)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("a thread panicked"))
        .collect();
    assert!(
        results.iter().all(|(p, _)| *p == results[0].0),
        "all callers must get the same cluster"
    );
}

#[test]
fn errors_name_the_command_and_what_it_said() {
    let pg = cluster();
    let e = pg.psql("harness_no_such_db", "SELECT 1").unwrap_err();
    assert!(e.contains("psql"), "{e}");
    assert!(e.contains("harness_no_such_db"), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    let e = pg
        .psql("postgres", "SELECT * FROM no_such_table")
        .unwrap_err();
    assert!(e.contains("no_such_table"), "{e}");
    assert!(pg.create_database("bad name; DROP").is_err());
    assert!(pg.create_database(&"x".repeat(64)).is_err());
}
