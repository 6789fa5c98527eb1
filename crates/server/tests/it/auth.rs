//! Named credentials and roles through a real gateway: every route against every role, 401
//! without a known token, feedback and inference credentials, two named approvers, and a
//! forged `x-switchyard-actor`.

use hyper::Method;
use serde_json::{json, Value};
use switchyard_core::rollout::{AbnOutcome, ArmDecision, Phase, PrimaryTest};
use switchyard_server::auth::sha256_hex;
use switchyard_server::client::AdminClient;

use crate::support::{oip_row, MockModel, Reply, TestGateway};

/// One credential per role: (name, role).
const PEOPLE: [(&str, &str); 6] = [
    ("vic", "viewer"),
    ("otto", "operator"),
    ("alice", "approver"),
    ("fred", "feedback"),
    ("ines", "inference"),
    ("root", "admin"),
];

fn token(name: &str) -> String {
    format!("tok-{name}-0123456789")
}

/// A gateway config with model `m` (versions a and b on `url`, keyed by `x-key`), `other` on
/// the same server, and `credentials` (YAML list entries) under `auth`.
fn config(url: &str, credentials: &[String], data_plane_require: bool) -> String {
    let mut yaml = format!(
        "models:\n  m:\n    routing_key: {{ header: x-key }}\n    versions: {{ a: {{ url: \"{url}\" }}, b: {{ url: \"{url}\" }} }}\n    serve: {{ kind: single, version: a }}\n  other:\n    versions: {{ a: {{ url: \"{url}\" }} }}\n    serve: {{ kind: single, version: a }}\n"
    );
    if !credentials.is_empty() {
        yaml.push_str("auth:\n  credentials:\n");
        for c in credentials {
            yaml.push_str(&format!("    - {c}\n"));
        }
        yaml.push_str(&format!(
            "  data_plane: {{ require: {data_plane_require} }}\n"
        ));
    }
    yaml
}

fn credential(name: &str, roles: &str) -> String {
    format!(
        "{{ name: {name}, roles: [{roles}], token_sha256: \"{}\" }}",
        sha256_hex(token(name))
    )
}

fn everyone() -> Vec<String> {
    PEOPLE.iter().map(|(n, r)| credential(n, r)).collect()
}

fn admin_as(tg: &TestGateway, name: Option<&str>) -> AdminClient {
    let client = AdminClient::new(&tg.gateway.url())
        .unwrap()
        .with_actor("mallory");
    match name {
        Some(n) => client.with_token(&token(n)).unwrap(),
        None => client,
    }
}

async fn feedback_as(tg: &TestGateway, name: Option<&str>, body: &Value) -> Reply {
    let auth = name.map(|n| format!("Bearer {}", token(n)));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    tg.client
        .post_json(&tg.url("/v1/feedback"), &headers, body)
        .await
}

async fn infer_as(tg: &TestGateway, name: Option<&str>, model: &str, key: &str) -> Reply {
    let auth = name.map(|n| format!("Bearer {}", token(n)));
    let mut headers = vec![("x-key", key)];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    tg.client
        .post_json(
            &tg.url(&format!("/v2/models/{model}/infer")),
            &headers,
            &oip_row(&[1.0]),
        )
        .await
}

/// An admin route: method, path under /admin/v1, body, the role a refusal names, the roles
/// that may call it.
type Route<'a> = (Method, &'a str, Option<&'a str>, &'a str, &'a [&'a str]);

const CANARY: &str = "name: c1\nmodel: m\nkind: canary\nstable: a\ncandidate: b\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_every_role() {
    let m = MockModel::start(1).await;
    let tg = TestGateway::start(&config(&m.url(), &everyone(), true)).await;
    let root = admin_as(&tg, Some("root"));
    assert_eq!(
        root.send(Method::POST, "/rollouts", Some(CANARY.into()))
            .await
            .unwrap()
            .status,
        201
    );
    let reading = &["viewer", "operator", "approver", "admin"][..];
    let operating = &["operator", "admin"][..];
    let approving = &["approver", "admin"][..];
    // (method, path under /admin/v1, body, the role named in a refusal, who may)
    let routes: Vec<Route> = vec![
        (Method::GET, "/routes", None, "viewer", reading),
        (
            Method::PUT,
            "/routes/other",
            Some("{\"kind\": \"single\", \"version\": \"a\"}"),
            "admin",
            &["admin"],
        ),
        (Method::GET, "/models/m/stats", None, "viewer", reading),
        (Method::GET, "/rollouts", None, "viewer", reading),
        (Method::GET, "/rollouts/c1", None, "viewer", reading),
        (Method::GET, "/rollouts/c1/events", None, "viewer", reading),
        (Method::GET, "/rollouts/c1/report", None, "viewer", reading),
        (Method::GET, "/rollouts/c1/history", None, "viewer", reading),
        (Method::GET, "/audit/verify", None, "viewer", reading),
        (Method::GET, "/cluster", None, "viewer", reading),
        (
            Method::POST,
            "/rollouts",
            Some(CANARY),
            "operator",
            operating,
        ),
        (
            Method::POST,
            "/rollouts/c1/pause",
            None,
            "operator",
            operating,
        ),
        (
            Method::POST,
            "/rollouts/c1/resume",
            None,
            "operator",
            operating,
        ),
        (
            Method::POST,
            "/rollouts/c1/approve",
            None,
            "approver",
            approving,
        ),
        (
            Method::POST,
            "/rollouts/c1/promote",
            None,
            "approver",
            approving,
        ),
        (
            Method::POST,
            "/rollouts/c1/rollback",
            None,
            "operator",
            operating,
        ),
        (
            Method::POST,
            "/rollouts/c1/abort",
            None,
            "operator",
            operating,
        ),
    ];
    let mut checked = 0;
    for (method, path, body, needed, allowed) in &routes {
        // No token, or an unknown one: 401.
        for client in [
            admin_as(&tg, None),
            admin_as(&tg, None).with_token("tok-nobody").unwrap(),
        ] {
            let r = client
                .send(method.clone(), path, body.map(str::to_string))
                .await
                .unwrap();
            assert_eq!(r.status.as_u16(), 401, "{method} {path} without a token");
            assert_eq!(r.error().code, "unauthorized");
        }
        for (name, role) in PEOPLE {
            let r = admin_as(&tg, Some(name))
                .send(method.clone(), path, body.map(str::to_string))
                .await
                .unwrap();
            let status = r.status.as_u16();
            if allowed.contains(&role) {
                assert!(
                    status != 401 && status != 403,
                    "{role} may {method} {path}: {status} {:?}",
                    r.error()
                );
            } else {
                assert_eq!(status, 403, "{role} may not {method} {path}");
                let e = r.error();
                assert_eq!(e.code, "forbidden");
                assert!(
                    e.message.contains(&format!("needs role `{needed}`"))
                        && e.message.contains(name),
                    "{role} {method} {path}: {}",
                    e.message
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * PEOPLE.len());

    // Feedback: the feedback role (or admin), nobody else.
    let label = json!({"request_id": "nope", "label": 1});
    assert_eq!(feedback_as(&tg, None, &label).await.status, 401);
    for (name, role) in PEOPLE {
        let r = feedback_as(&tg, Some(name), &label).await;
        if ["feedback", "admin"].contains(&role) {
            assert_eq!(
                r.status,
                200,
                "{role}: {}",
                String::from_utf8_lossy(&r.body)
            );
        } else {
            assert_eq!(r.status, 403, "{role} may not post feedback");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(msg.contains("needs role `feedback`"), "{msg}");
        }
    }

    // Inference with data_plane.require: the inference role (or admin), nobody else; the
    // refusal is in the inference protocol's form.
    let r = infer_as(&tg, None, "m", "k").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthorized");
    for (name, role) in PEOPLE {
        let r = infer_as(&tg, Some(name), "m", "k").await;
        if ["inference", "admin"].contains(&role) {
            assert_eq!(
                r.status,
                200,
                "{role}: {}",
                String::from_utf8_lossy(&r.body)
            );
        } else {
            assert_eq!(r.status, 403, "{role} may not infer");
            let msg = r.json()["error"].as_str().unwrap().to_string();
            assert!(msg.contains("needs role `inference`"), "{msg}");
        }
    }
    // Every inference route: KServe v1 and a pinned version too.
    for path in ["/v1/models/m:predict", "/v2/models/m/versions/b/infer"] {
        let url = tg.url(path);
        let body = if path.starts_with("/v1") {
            json!({"instances": [[1.0]]})
        } else {
            oip_row(&[1.0])
        };
        let r = tg.client.post_json(&url, &[], &body).await;
        assert_eq!(r.status, 401, "{path}");
        let bearer = format!("Bearer {}", token("otto"));
        let r = tg
            .client
            .post_json(&url, &[("authorization", &bearer)], &body)
            .await;
        assert_eq!(r.status, 403, "{path}");
    }
    // Refused inference is never recorded against a model.
    tg.gateway.state.log.flush().await.unwrap();
    let agg = tg.gateway.state.log.aggregates().lock().clone();
    let served: u64 = agg.series.values().map(|s| s.requests).sum();
    assert_eq!(served, 2, "only the inference and admin calls were served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_needs_its_credential_and_keeps_to_its_models() {
    let m = MockModel::start(1).await;
    // Credentials configured, inference left open.
    let mut creds = everyone();
    creds.push(credential("labeller", "feedback").replace(" }", ", models: [other] }"));
    let tg = TestGateway::start(&config(&m.url(), &creds, false)).await;
    let mut ids = Vec::new();
    for model in ["m", "other"] {
        let r = infer_as(&tg, None, model, "k").await;
        assert_eq!(
            r.status, 200,
            "inference stays open without data_plane.require"
        );
        ids.push(r.header("x-request-id"));
    }
    let (on_m, on_other) = (&ids[0], &ids[1]);

    // Without a credential, labels are refused and nothing is stored.
    let r = feedback_as(&tg, None, &json!({"request_id": on_m, "label": 1})).await;
    assert_eq!(r.status, 401);
    let r = feedback_as(&tg, Some("alice"), &json!({"request_id": on_m, "label": 1})).await;
    assert_eq!(r.status, 403);

    // A credential limited to `other` may not label `m`'s requests.
    let r = feedback_as(
        &tg,
        Some("labeller"),
        &json!([{"request_id": on_m, "label": 1}]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["forbidden"], json!([on_m]));
    let r = feedback_as(
        &tg,
        Some("labeller"),
        &json!([{"request_id": on_m, "label": 1}, {"request_id": on_other, "label": 1}]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["accepted"], 1);
    assert_eq!(r.json()["forbidden"], json!([on_m]));
    // An unlimited feedback credential labels `m`'s request: nothing of it was stored before.
    let r = feedback_as(&tg, Some("fred"), &json!({"request_id": on_m, "label": 1})).await;
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_takes_feedback_and_the_actor_header() {
    let m = MockModel::start(1).await;
    let tg = TestGateway::start(&config(&m.url(), &[], false)).await;
    assert!(tg.gateway.state.auth.is_open());
    let r = infer_as(&tg, None, "m", "k").await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id");
    let r = feedback_as(&tg, None, &json!({"request_id": id, "label": 1})).await;
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(1)));
    admin_as(&tg, None).apply(CANARY).await.unwrap();
    let events = tg.events("c1").await;
    assert_eq!(
        events[0].actor, "admin:mallory",
        "open mode: the header is the actor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_actor_header_does_not_change_the_recorded_actor() {
    let m = MockModel::start(1).await;
    let tg = TestGateway::start(&config(&m.url(), &everyone(), false)).await;
    // `admin_as` sends `x-switchyard-actor: mallory` with every call.
    admin_as(&tg, Some("otto")).apply(CANARY).await.unwrap();
    admin_as(&tg, Some("otto"))
        .command("c1", "pause")
        .await
        .unwrap();
    admin_as(&tg, Some("root"))
        .command("c1", "abort")
        .await
        .unwrap();
    let events = admin_as(&tg, Some("vic"))
        .events("c1")
        .await
        .unwrap()
        .events;
    let actors: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actors,
        vec![("started", "otto"), ("paused", "otto"), ("aborted", "root")],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| !e.message.contains("mallory")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_needing_two_named_approvers_advances_after_the_second() {
    let m = MockModel::start(1).await;
    let mut creds = everyone();
    creds.push(credential("bob", "approver"));
    let tg = TestGateway::start(&config(&m.url(), &creds, false)).await;
    let spec = "name: c2\nmodel: m\nkind: canary\nstable: a\ncandidate: b\n\
        steps: [{ weight: 50, min_requests: 1, min_duration_ms: 0 }, { weight: 100, approvals: 2 }]\n\
        gate: { max_accuracy_drop: null, max_mae_increase: null, max_p95_increase: null }\n";
    admin_as(&tg, Some("otto")).apply(spec).await.unwrap();
    for i in 0..40 {
        assert_eq!(
            infer_as(&tg, None, "m", &format!("key-{i}")).await.status,
            200
        );
    }
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;
    let alice = admin_as(&tg, Some("alice"));
    let bob = admin_as(&tg, Some("bob"));
    let view = alice.rollout("c2").await.unwrap();
    assert_eq!(view.phase, Phase::AwaitingApproval, "{view:?}");
    assert_eq!(view.approvals_needed, Some(2));

    let view = alice.command("c2", "approve").await.unwrap();
    assert_eq!((view.phase, view.step), (Phase::AwaitingApproval, 1));
    assert_eq!(view.approved_by, vec!["alice".to_string()]);
    // Alice again is still one approver.
    let view = alice.command("c2", "approve").await.unwrap();
    assert_eq!(view.approved_by, vec!["alice".to_string()]);
    assert_eq!(view.phase, Phase::AwaitingApproval);
    // An operator may not approve.
    let r = admin_as(&tg, Some("otto"))
        .send(Method::POST, "/rollouts/c2/approve", None)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403);

    let view = bob.command("c2", "approve").await.unwrap();
    assert_eq!((view.phase, view.step), (Phase::Running, 2), "{view:?}");
    assert!(view.approved_by.is_empty());

    let events = admin_as(&tg, Some("vic"))
        .events("c2")
        .await
        .unwrap()
        .events;
    let approvals: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e.kind.starts_with("approv"))
        .map(|e| (e.kind.as_str(), e.actor.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(approvals.len(), 3, "{approvals:#?}");
    assert_eq!(approvals[0].0, "approval_recorded");
    assert_eq!(approvals[0].1, "alice");
    assert_eq!(approvals[1].0, "approval_repeated");
    assert_eq!(approvals[1].1, "alice");
    assert_eq!(
        approvals[2],
        ("approved", "bob", "approved by alice and bob")
    );
    let advanced = events
        .iter()
        .position(|e| e.kind == "step_advanced" && e.message.contains("100%"))
        .unwrap();
    let approved = events.iter().position(|e| e.kind == "approved").unwrap();
    assert!(
        advanced > approved,
        "the step moved only after the second approver"
    );
    assert!(admin_as(&tg, Some("vic")).audit_verify().await.unwrap().ok);
}

/// An A/B/n on a posted continuous metric compared by Mann-Whitney (`test: mann_whitney`), whose
/// conclusion needs two approvers (`approvals: 2`): the report names the test in JSON, text,
/// markdown and HTML; the conclusion waits (an `awaiting_approval` event) with the split as it
/// was; an operator may not approve; the same approver twice counts once; the second name
/// promotes the winner, the third arm, not the spec's second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mann_whitney_abn_needs_two_named_approvers_before_its_winner_serves() {
    let m = MockModel::start(1).await;
    let mut creds = everyone();
    creds.push(credential("bob", "approver"));
    let url = m.url();
    let mut yaml = format!(
        "models:\n  m:\n    routing_key: {{ header: x-key }}\n    versions: {{ a: {{ url: \"{url}\" }}, b: {{ url: \"{url}\" }}, c: {{ url: \"{url}\" }} }}\n    serve: {{ kind: single, version: a }}\n"
    );
    yaml.push_str("auth:\n  credentials:\n");
    for c in &creds {
        yaml.push_str(&format!("    - {c}\n"));
    }
    let tg = TestGateway::start(&yaml).await;
    let spec =
        "name: rev\nmodel: m\nkind: ab\ncontrol: a\ntreatment: b\nvariants: [{ version: c }]\n\
        metric: mean:revenue\ntest: mann_whitney\nmin_per_arm: 40\napprovals: 2\n";
    admin_as(&tg, Some("otto")).apply(spec).await.unwrap();
    // Revenue per request: the same spread everywhere, c shifted up by 4.
    let mut feedback = Vec::new();
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..240u64 {
        let id = format!("req-{i}");
        let r = tg
            .client
            .post_json(
                &tg.url("/v2/models/m/infer"),
                &[("x-key", &format!("key-{i}")), ("x-request-id", &id)],
                &oip_row(&[1.0]),
            )
            .await;
        assert_eq!(r.status, 200);
        let version = r.header("x-switchyard-model-version");
        *served.entry(version.clone()).or_default() += 1;
        let base = ((i * 37) % 101) as f64 / 10.0;
        let revenue = base + if version == "c" { 4.0 } else { 0.0 };
        feedback.push(json!({"request_id": id, "metrics": {"revenue": revenue}}));
    }
    assert!(served.values().all(|n| *n >= 40), "{served:?}");
    let r = feedback_as(&tg, Some("fred"), &Value::Array(feedback)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    tg.gateway.state.log.flush().await.unwrap();
    tg.tick(1_000).await;

    let vic = admin_as(&tg, Some("vic"));
    let view = vic.rollout("rev").await.unwrap();
    assert_eq!(view.phase, Phase::AwaitingApproval, "{view:?}");
    assert_eq!(view.approvals_needed, Some(2));
    let split = view.strategy.clone();
    let report = vic.report("rev").await.unwrap();
    let abn = report.analysis.ab.as_ref().unwrap().abn.as_ref().unwrap();
    assert_eq!(abn.test, PrimaryTest::MannWhitney);
    assert_eq!(abn.outcome, AbnOutcome::Winner("c".into()));
    let c = &abn.arms[2];
    assert_eq!(c.decision, ArmDecision::Winner);
    assert!(c.common_language.unwrap() > 0.6, "{c:?}");
    assert_eq!(
        c.ranked,
        Some((u64::from(served["c"]), u64::from(served["a"])))
    );
    assert!(
        c.ci_low.is_none(),
        "no interval of the means under Mann-Whitney"
    );
    assert_eq!(abn.arms[1].decision, ArmDecision::Inconclusive);
    for format in ["text", "markdown", "html"] {
        let body = String::from_utf8(vic.report_as("rev", format).await.unwrap().to_vec()).unwrap();
        for needle in ["Mann-Whitney U", "P(arm &gt; control)", "values ranked"] {
            let needle = if format == "html" {
                needle.to_string()
            } else {
                needle.replace("&gt;", ">")
            };
            assert!(
                body.contains(&needle),
                "'{needle}' in the {format} report:\n{body}"
            );
        }
    }

    let alice = admin_as(&tg, Some("alice"));
    let view = alice.command("rev", "approve").await.unwrap();
    assert_eq!(view.phase, Phase::AwaitingApproval);
    assert_eq!(view.approved_by, vec!["alice".to_string()]);
    assert_eq!(
        view.strategy, split,
        "the split stays until the second name"
    );
    let view = alice.command("rev", "approve").await.unwrap();
    assert_eq!(view.approved_by, vec!["alice".to_string()]);
    let r = admin_as(&tg, Some("otto"))
        .send(Method::POST, "/rollouts/rev/approve", None)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403);
    let view = admin_as(&tg, Some("bob"))
        .command("rev", "approve")
        .await
        .unwrap();
    assert_eq!(view.phase, Phase::Completed, "{view:?}");
    assert_eq!(
        view.strategy,
        switchyard_core::Strategy::Single {
            version: "c".into()
        }
    );
    let kinds: Vec<String> = vic
        .events("rev")
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind.clone())
        .filter(|k| !matches!(k.as_str(), "started"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ab_concluded",
            "awaiting_approval",
            "approval_recorded",
            "approval_repeated",
            "approved",
            "promoted"
        ]
    );
    let r = tg
        .client
        .post_json(
            &tg.url("/v2/models/m/infer"),
            &[("x-key", "key-0")],
            &oip_row(&[1.0]),
        )
        .await;
    assert_eq!(r.header("x-switchyard-model-version"), "c");
}
