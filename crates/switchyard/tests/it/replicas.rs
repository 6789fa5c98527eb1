//! Three `switchyard serve` replicas on loopback sharing one PostgreSQL: traffic through all
//! three, a canary applied through a replica that is not the controller (forwarded), the
//! controller replica killed with SIGKILL mid-rollout, another replica taking over and
//! finishing the rollout, the audit chain verifying, the same routing on every replica, and the
//! per-replica logs summing to the traffic sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use support::{http, http_with, metric, repo, request_body, wait_for, Admin};
use switchyard_core::rollout::Phase;
use switchyard_core::Strategy;
use switchyard_server::api::{ChainCheck, RoutesView};
use switchyard_server::client::ClientError;
use switchyard_store::{Cluster, StoreUrl};

struct Replica {
    name: String,
    child: Child,
    url: String,
    /// Requests this replica answered 200.
    served: u64,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path, store: &StoreUrl, name: &str) -> Replica {
    let StoreUrl::Postgres(url) = store else {
        unreachable!()
    };
    let (child, url) = support::serve(config, &["--store", url, "--replica", name]);
    Replica {
        name: name.into(),
        child,
        url,
        served: 0,
    }
}

fn traffic(replica: &mut Replica, from: u64, n: u64) {
    for i in from..from + n {
        let (status, _, body) = http(
            "POST",
            &format!("{}/v2/models/yield/infer", replica.url),
            &request_body(i),
        );
        assert_eq!(status, 200, "{}: {body}", replica.name);
        replica.served += 1;
    }
}

fn controller_of(url: &str) -> Option<String> {
    Admin::new(url)
        .call(|a| a.cluster())
        .controller
        .map(|c| c.replica)
}

#[test]
fn three_replicas_one_controller_takeover_after_kill_9() {
    let store =
        switchyard_store::testing::fresh_postgres_database().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.yaml");
    std::fs::write(
        &config,
        format!(
            "controller: {{ tick_ms: 50 }}\nlog: {{ batch_size: 32 }}\nmodels:\n  yield:\n    routing_key: {{ header: x-wafer-id }}\n    versions:\n      v1: {{ onnx: {m}/yield_v1.onnx }}\n      v2: {{ onnx: {m}/yield_v2.onnx }}\n    serve: {{ kind: single, version: v1 }}\n",
            m = repo().join("models").display()
        ),
    )
    .unwrap();
    let mut replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| start(&config, &store, name))
        .collect();

    // Exactly one controller, the same on every replica.
    wait_for("a controller", Duration::from_secs(20), || {
        replicas.iter().all(|r| controller_of(&r.url).is_some())
    });
    let leader = controller_of(&replicas[0].url).unwrap();
    for r in &replicas {
        assert_eq!(controller_of(&r.url).as_deref(), Some(leader.as_str()));
        let me = Admin::new(&r.url).call(|a| a.cluster());
        assert_eq!(me.is_controller, r.name == leader, "{me:?}");
    }

    // Applied through a replica that is not the controller: forwarded to it.
    let canary = "name: c\nmodel: yield\nkind: canary\nstable: v1\ncandidate: v2\nmin_requests: 60\nmin_duration_ms: 300\nsteps: [{weight: 30}, {weight: 60, min_duration_ms: 1500}, {weight: 100}]\ngate: { max_accuracy_drop: null, max_mae_increase: null, max_p95_increase: null }\n";
    let follower = replicas.iter().position(|r| r.name != leader).unwrap();
    // (raw, to see which replica answered)
    let (status, headers, view) = http(
        "POST",
        &format!("{}/admin/v1/rollouts", replicas[follower].url),
        canary,
    );
    assert_eq!(status, 201, "{view}");
    assert_eq!(headers.get("x-switchyard-controller"), Some(&leader));
    // A second apply through another follower is refused by the controller as a conflict.
    let follower_admin = Admin::new(&replicas[follower].url);
    match follower_admin.try_call(|a| a.apply(canary)) {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status.as_u16(), 409),
        other => panic!("a second apply must conflict: {other:?}"),
    }

    // The new routing reaches every replica, with the same epoch.
    wait_for(
        "the canary's routing on every replica",
        Duration::from_secs(10),
        || {
            let tables: Vec<RoutesView> = replicas
                .iter()
                .map(|r| Admin::new(&r.url).call(|a| a.routes()))
                .collect();
            tables.iter().all(|t| {
                t == &tables[0] && matches!(t.routes["yield"].strategy, Strategy::Split { .. })
            })
        },
    );

    // Routing is deterministic: a wafer id gets the same version on every replica.
    for wafer in 0..40u64 {
        let versions: Vec<String> = replicas
            .iter_mut()
            .map(|r| {
                let (status, headers, _) = http_with(
                    "POST",
                    &format!("{}/v2/models/yield/infer", r.url),
                    &request_body(wafer),
                    &format!("x-wafer-id: W{wafer:04}\r\n"),
                );
                assert_eq!(status, 200);
                r.served += 1;
                headers["x-switchyard-model-version"].clone()
            })
            .collect();
        assert!(
            versions.iter().all(|v| v == &versions[0]),
            "W{wafer}: {versions:?}"
        );
    }
    let mut sent = 3 * 40u64;

    // Traffic through all three until the canary reaches step 2.
    wait_for("the canary's step 2", Duration::from_secs(90), || {
        for r in replicas.iter_mut() {
            traffic(r, sent, 10);
            sent += 10;
        }
        follower_admin.call(|a| a.rollout("c")).step == 2
    });

    // Stop sending to the controller, let its log catch up with what it answered, then kill -9.
    let li = replicas.iter().position(|r| r.name == leader).unwrap();
    let (leader_url, leader_served) = (replicas[li].url.clone(), replicas[li].served);
    wait_for(
        "the controller's log to commit",
        Duration::from_secs(20),
        || metric(&leader_url, "switchyard_log_written_records_total") as u64 == leader_served,
    );
    let mut dead = replicas.remove(li);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let survivor = Admin::new(&replicas[0].url);
    assert_eq!(survivor.call(|a| a.rollout("c")).step, 2);

    // Another replica takes over.
    let took = wait_for("a new controller", Duration::from_secs(30), || {
        replicas.iter().any(|r| {
            let me = Admin::new(&r.url).call(|a| a.cluster());
            me.is_controller && me.controller.is_some_and(|c| c.replica == r.name)
        })
    });
    let new_leader = controller_of(&replicas[0].url).unwrap();
    assert_ne!(new_leader, leader);
    eprintln!("controller {leader} killed; {new_leader} took over after {took:?}");

    // It continues the rollout from its recorded state to the end.
    wait_for("the canary to complete", Duration::from_secs(90), || {
        for r in replicas.iter_mut() {
            traffic(r, sent, 10);
            sent += 10;
        }
        survivor.call(|a| a.rollout("c")).phase == Phase::Completed
    });
    let routes: Vec<RoutesView> = replicas
        .iter()
        .map(|r| {
            let admin = Admin::new(&r.url);
            wait_for("the final routing", Duration::from_secs(10), || {
                admin.call(|a| a.routes()).routes["yield"].strategy
                    == Strategy::Single {
                        version: "v2".into(),
                    }
            });
            admin.call(|a| a.routes())
        })
        .collect();
    assert_eq!(routes[0], routes[1], "one routing table");

    // One audit trail, intact, with the steps decided by both controllers.
    let other = Admin::new(&replicas[1].url);
    let audit = other.call(|a| a.audit_verify());
    assert!(audit.ok, "{audit:?}");
    let events = other.call(|a| a.events("c")).events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"promoted"), "{kinds:?}");
    // Each event names the replica that decided it: the first controller, then its successor.
    let deciders: Vec<&str> = events.iter().map(|e| e.text("replica").unwrap()).collect();
    assert_eq!(deciders.first(), Some(&leader.as_str()), "{deciders:?}");
    assert_eq!(deciders.last(), Some(&new_leader.as_str()), "{deciders:?}");
    let switch = deciders.iter().position(|d| *d == new_leader).unwrap();
    assert!(
        deciders[switch..].iter().all(|d| *d == new_leader),
        "no event from the dead controller after the takeover: {deciders:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "started").count(),
        1,
        "{kinds:?}"
    );

    // The operator's offline check reads the shared store directly.
    let StoreUrl::Postgres(pg) = &store else {
        unreachable!()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["audit", "verify", "--json", "--store", pg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: ChainCheck = serde_json::from_slice(&out.stdout).unwrap();
    assert!(offline.ok, "{offline:?}");
    assert_eq!(offline.events, audit.events);

    // Every replica's log holds exactly what it answered; together, all the traffic sent.
    for r in &replicas {
        let url = r.url.clone();
        let served = r.served;
        wait_for(
            "a survivor's log to commit",
            Duration::from_secs(20),
            || metric(&url, "switchyard_log_written_records_total") as u64 == served,
        );
    }
    let cluster = Cluster::open(&store, "test-observer").unwrap();
    let counts = cluster.records_by_replica().unwrap();
    let logged: BTreeMap<String, u64> = counts
        .iter()
        .filter(|(_, role, _)| role == "serving")
        .map(|(replica, _, n)| (replica.clone(), *n))
        .collect();
    let mut expected: BTreeMap<String, u64> = replicas
        .iter()
        .map(|r| (r.name.clone(), r.served))
        .collect();
    expected.insert(dead.name.clone(), dead.served);
    assert_eq!(logged, expected);
    assert_eq!(logged.values().sum::<u64>(), sent);
}
