#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property test: random forests built in memory (random shapes and depths, thresholds, all
//! six comparison modes, missing-value tracking, NaN inputs, several leaf weights) give the same
//! answer on the compiled engine as on a straightforward recursive evaluation of the same trees,
//! for regressors (every aggregate), multiclass classifiers (base values, NONE / SOFTMAX /
//! LOGISTIC) and binary classifiers in the single-score convention.

use proptest::prelude::*;
use switchyard_server::onnx::trees::{EnsembleOp, RawEnsemble, TreeEnsemble};

#[derive(Debug, Clone)]
enum Tree {
    Leaf(Vec<(u8, f32)>),
    Branch {
        feature: usize,
        threshold: f32,
        mode: usize,
        missing_true: bool,
        if_true: Box<Tree>,
        if_false: Box<Tree>,
    },
}

const MODES: [&str; 6] = [
    "BRANCH_LEQ",
    "BRANCH_LT",
    "BRANCH_GTE",
    "BRANCH_GT",
    "BRANCH_EQ",
    "BRANCH_NEQ",
];
const VALUES: [f32; 5] = [-1.0, 0.0, 0.5, 1.0, 2.5];
const N_FEATURES: usize = 4;

fn tree_strategy(
    max_weight_class: u8,
    mixed_signs: bool,
    modes: usize,
) -> impl Strategy<Value = Tree> {
    let weight = if mixed_signs {
        -1.0f32..1.0
    } else {
        0.0f32..1.0
    };
    let leaf = prop::collection::vec((0..max_weight_class, weight), 1..4).prop_map(Tree::Leaf);
    leaf.prop_recursive(6, 64, 2, move |inner| {
        (
            0..N_FEATURES,
            prop_oneof![prop::sample::select(VALUES.to_vec()), -2.0f32..3.0],
            0..modes,
            any::<bool>(),
            inner.clone(),
            inner,
        )
            .prop_map(
                |(feature, threshold, mode, missing_true, t, f)| Tree::Branch {
                    feature,
                    threshold,
                    mode,
                    missing_true,
                    if_true: Box::new(t),
                    if_false: Box::new(f),
                },
            )
    })
}

fn row_strategy() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(VALUES.to_vec()),
            Just(f32::NAN),
            -2.0f32..3.0
        ],
        N_FEATURES,
    )
}

/// Flattens trees into ONNX attributes. Node ids are pre-order; the root is listed first and
/// the other nodes in reverse, so listing order and ids differ.
fn to_raw(trees: &[Tree], op: EnsembleOp) -> RawEnsemble {
    let mut raw = RawEnsemble::new("random", op);
    for (tree_id, tree) in trees.iter().enumerate() {
        let mut listed: Vec<(i64, &Tree, i64, i64)> = Vec::new(); // (id, node, true id, false id)
        fn number<'a>(
            t: &'a Tree,
            next: &mut i64,
            out: &mut Vec<(i64, &'a Tree, i64, i64)>,
        ) -> i64 {
            let id = *next;
            *next += 1;
            let at = out.len();
            out.push((id, t, -1, -1));
            if let Tree::Branch {
                if_true, if_false, ..
            } = t
            {
                let ti = number(if_true, next, out);
                let fi = number(if_false, next, out);
                out[at].2 = ti;
                out[at].3 = fi;
            }
            id
        }
        let mut next = 0;
        number(tree, &mut next, &mut listed);
        let root = listed.remove(0);
        listed.reverse();
        listed.insert(0, root);
        for (id, node, t, f) in listed {
            raw.nodes_treeids.push(tree_id as i64);
            raw.nodes_nodeids.push(id);
            match node {
                Tree::Leaf(weights) => {
                    raw.nodes_featureids.push(0);
                    raw.nodes_values.push(0.0);
                    raw.nodes_modes.push("LEAF".into());
                    raw.nodes_truenodeids.push(0);
                    raw.nodes_falsenodeids.push(0);
                    raw.nodes_missing_value_tracks_true.push(0);
                    for (class, w) in weights {
                        raw.leaf_treeids.push(tree_id as i64);
                        raw.leaf_nodeids.push(id);
                        raw.leaf_ids.push(i64::from(*class));
                        raw.leaf_weights.push(*w);
                    }
                }
                Tree::Branch {
                    feature,
                    threshold,
                    mode,
                    missing_true,
                    ..
                } => {
                    raw.nodes_featureids.push(*feature as i64);
                    raw.nodes_values.push(*threshold);
                    raw.nodes_modes.push(MODES[*mode].into());
                    raw.nodes_truenodeids.push(t);
                    raw.nodes_falsenodeids.push(f);
                    raw.nodes_missing_value_tracks_true
                        .push(i64::from(*missing_true));
                }
            }
        }
    }
    raw
}

/// The reference: walk the tree structure itself, recursively.
fn leaf<'a>(tree: &'a Tree, row: &[f32]) -> &'a [(u8, f32)] {
    match tree {
        Tree::Leaf(w) => w,
        Tree::Branch {
            feature,
            threshold,
            mode,
            missing_true,
            if_true,
            if_false,
        } => {
            let x = row[*feature];
            let v = *threshold;
            let holds = match MODES[*mode] {
                "BRANCH_LEQ" => x <= v,
                "BRANCH_LT" => x < v,
                "BRANCH_GTE" => x >= v,
                "BRANCH_GT" => x > v,
                "BRANCH_EQ" => x == v,
                _ => x != v,
            };
            if holds || (*missing_true && x.is_nan()) {
                leaf(if_true, row)
            } else {
                leaf(if_false, row)
            }
        }
    }
}

fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-5 * b.abs().max(1.0) || (a.is_nan() && b.is_nan())
}

fn run(engine: &TreeEnsemble, rows: &[Vec<f32>]) -> (Vec<f32>, Vec<usize>) {
    let mut out = vec![0.0; rows.len() * engine.n_outputs()];
    let mut labels = vec![0; rows.len()];
    engine.predict(rows, &mut out, &mut labels).unwrap();
    (out, labels)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn regressors_agree_with_the_reference(
        trees in prop::collection::vec(tree_strategy(1, true, 6), 1..6),
        rows in prop::collection::vec(row_strategy(), 1..40),
        aggregate in prop::sample::select(vec!["SUM", "AVERAGE", "MIN", "MAX"]),
        base in prop::option::of(-5.0f32..5.0),
    ) {
        let mut raw = to_raw(&trees, EnsembleOp::Regressor);
        raw.n_targets = Some(1);
        raw.aggregate_function = Some(aggregate.to_owned());
        raw.base_values = base.into_iter().collect();
        let engine = TreeEnsemble::compile(&raw, N_FEATURES).unwrap();
        let (out, _) = run(&engine, &rows);
        for (r, row) in rows.iter().enumerate() {
            // Single-target path: each leaf's first weight.
            let firsts: Vec<f32> = trees.iter().map(|t| leaf(t, row)[0].1).collect();
            let sum: f32 = firsts.iter().fold(0.0f32, |a, w| a + w);
            let v = match aggregate {
                "SUM" => sum,
                "AVERAGE" => sum / trees.len() as f32,
                "MIN" => firsts.iter().copied().fold(f32::INFINITY, f32::min),
                _ => firsts.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            } + base.unwrap_or(0.0);
            prop_assert!(close(out[r], f64::from(v)), "row {r} {row:?}: {} vs {v}", out[r]);
        }
    }

    #[test]
    fn multiclass_classifiers_agree_with_the_reference(
        n_classes in 3usize..6,
        trees in prop::collection::vec(tree_strategy(5, true, 6), 1..6),
        rows in prop::collection::vec(row_strategy(), 1..40),
        post in prop::sample::select(vec!["NONE", "SOFTMAX", "LOGISTIC"]),
        with_base in any::<bool>(),
    ) {
        // Map class ids into range.
        let trees: Vec<Tree> = trees.into_iter().map(|t| remap(t, n_classes as u8)).collect();
        let mut raw = to_raw(&trees, EnsembleOp::Classifier);
        raw.n_classes = Some(n_classes);
        raw.post_transform = Some(post.to_owned());
        let base: Vec<f32> = if with_base { (0..n_classes).map(|c| c as f32 * 0.25 - 0.5).collect() } else { Vec::new() };
        raw.base_values = base.clone();
        let engine = TreeEnsemble::compile(&raw, N_FEATURES).unwrap();
        let (out, labels) = run(&engine, &rows);
        for (r, row) in rows.iter().enumerate() {
            let mut scores = vec![0.0f32; n_classes];
            let mut has = vec![false; n_classes];
            for t in &trees {
                for (c, w) in leaf(t, row) {
                    scores[*c as usize] += w;
                    has[*c as usize] = true;
                }
            }
            for (c, b) in base.iter().enumerate() {
                scores[c] += b;
                has[c] = true;
            }
            // The label: the first class with the largest score among those that got one.
            let label = (0..n_classes)
                .filter(|c| has[*c])
                .fold(None, |best: Option<usize>, c| match best {
                    Some(b) if scores[b] >= scores[c] => Some(b),
                    _ => Some(c),
                })
                .unwrap();
            prop_assert_eq!(labels[r], label, "row {} {:?} scores {:?}", r, row, scores);
            let expected: Vec<f64> = match post {
                "NONE" => scores.iter().map(|s| f64::from(*s)).collect(),
                "LOGISTIC" => scores.iter().map(|s| 1.0 / (1.0 + (-f64::from(*s)).exp())).collect(),
                _ => {
                    let m = scores.iter().fold(f64::NEG_INFINITY, |m, s| m.max(f64::from(*s)));
                    let e: Vec<f64> = scores.iter().map(|s| (f64::from(*s) - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.iter().map(|v| v / sum).collect()
                }
            };
            let got = &out[r * n_classes..(r + 1) * n_classes];
            for (g, e) in got.iter().zip(&expected) {
                prop_assert!(close(*g, *e), "row {r}: {got:?} vs {expected:?}");
            }
        }
    }

    #[test]
    fn binary_single_score_classifiers_agree_with_the_reference(
        mixed_signs in any::<bool>(),
        seed_trees in prop::collection::vec(tree_strategy(1, true, 6), 1..6),
        rows in prop::collection::vec(row_strategy(), 1..40),
        logistic in any::<bool>(),
        base in prop::option::of(-1.0f32..1.0),
    ) {
        // All weights on class 0 (skl2onnx / LightGBM / XGBoost binary layout); probabilities
        // (non-negative, averaged) or margins (mixed signs, usually with LOGISTIC).
        let trees: Vec<Tree> = seed_trees
            .into_iter()
            .map(|t| if mixed_signs { t } else { abs_weights(t) })
            .collect();
        let mut raw = to_raw(&trees, EnsembleOp::Classifier);
        raw.n_classes = Some(2);
        let post = if mixed_signs && logistic { "LOGISTIC" } else { "NONE" };
        raw.post_transform = Some(post.to_owned());
        raw.base_values = base.into_iter().collect();
        let all_positive = raw.leaf_weights.iter().all(|w| *w >= 0.0);
        let engine = TreeEnsemble::compile(&raw, N_FEATURES).unwrap();
        let (out, labels) = run(&engine, &rows);
        for (r, row) in rows.iter().enumerate() {
            let mut s = 0.0f32;
            for t in &trees {
                for (_, w) in leaf(t, row) {
                    s += w;
                }
            }
            s += base.unwrap_or(0.0);
            let (label, expected) = if all_positive {
                (usize::from(s > 0.5), [1.0 - f64::from(s), f64::from(s)])
            } else if post == "LOGISTIC" {
                let p = 1.0 / (1.0 + (-f64::from(s)).exp());
                (usize::from(s > 0.0), [1.0 - p, p])
            } else {
                (usize::from(s > 0.0), [-f64::from(s), f64::from(s)])
            };
            prop_assert_eq!(labels[r], label, "row {} score {}", r, s);
            let got = &out[r * 2..r * 2 + 2];
            prop_assert!(close(got[0], expected[0]) && close(got[1], expected[1]),
                "row {r}: {got:?} vs {expected:?}");
        }
    }
}

fn remap(t: Tree, n: u8) -> Tree {
    match t {
        Tree::Leaf(w) => Tree::Leaf(w.into_iter().map(|(c, w)| (c % n, w)).collect()),
        Tree::Branch {
            feature,
            threshold,
            mode,
            missing_true,
            if_true,
            if_false,
        } => Tree::Branch {
            feature,
            threshold,
            mode,
            missing_true,
            if_true: Box::new(remap(*if_true, n)),
            if_false: Box::new(remap(*if_false, n)),
        },
    }
}

fn abs_weights(t: Tree) -> Tree {
    match t {
        Tree::Leaf(w) => Tree::Leaf(w.into_iter().map(|(c, w)| (c, w.abs() * 0.3)).collect()),
        Tree::Branch {
            feature,
            threshold,
            mode,
            missing_true,
            if_true,
            if_false,
        } => Tree::Branch {
            feature,
            threshold,
            mode,
            missing_true,
            if_true: Box::new(abs_weights(*if_true)),
            if_false: Box::new(abs_weights(*if_false)),
        },
    }
}

#[test]
fn malformed_forests_are_refused_with_node_and_attribute() {
    let tree = Tree::Branch {
        feature: 0,
        threshold: 0.5,
        mode: 0,
        missing_true: false,
        if_true: Box::new(Tree::Leaf(vec![(0, 1.0)])),
        if_false: Box::new(Tree::Leaf(vec![(0, 2.0)])),
    };
    let good = {
        let mut raw = to_raw(std::slice::from_ref(&tree), EnsembleOp::Regressor);
        raw.n_targets = Some(1);
        raw
    };
    TreeEnsemble::compile(&good, 1).unwrap();
    let check = |edit: &dyn Fn(&mut RawEnsemble), needles: &[&str]| {
        let mut raw = good.clone();
        edit(&mut raw);
        let err = TreeEnsemble::compile(&raw, 1).unwrap_err().to_string();
        assert!(err.contains("\"random\""), "{err}");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in {err}");
        }
    };
    check(
        &|r| r.nodes_modes[0] = "BRANCH_SOMETIMES".into(),
        &["nodes_modes", "BRANCH_SOMETIMES"],
    );
    check(
        &|r| r.nodes_values.pop().map(drop).unwrap_or(()),
        &["nodes_values", "entries"],
    );
    check(
        &|r| r.nodes_falsenodeids[0] = 7,
        &["nodes_falsenodeids", "missing node 7"],
    );
    check(&|r| r.nodes_truenodeids[0] = 0, &["reached twice"]);
    check(
        &|r| r.nodes_featureids[0] = 3,
        &["nodes_featureids", "feature 3"],
    );
    check(
        &|r| r.aggregate_function = Some("MEDIAN".into()),
        &["aggregate_function", "MEDIAN"],
    );
    check(
        &|r| r.post_transform = Some("SOFTMAX".into()),
        &["post_transform"],
    );
    check(&|r| r.n_targets = Some(2), &["n_targets"]);
    check(&|r| r.leaf_ids[0] = 1, &["target_ids", "output 1"]);
    check(
        &|r| {
            // Drop the weights of one leaf.
            r.leaf_treeids.pop();
            r.leaf_nodeids.pop();
            r.leaf_ids.pop();
            r.leaf_weights.pop();
        },
        &["target_weights", "has no weight"],
    );
    check(
        &|r| {
            // Tree 0's nodes split around another tree.
            r.nodes_treeids[1] = 1;
        },
        &["nodes_treeids", "contiguously"],
    );
}
