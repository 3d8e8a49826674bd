//! EER, minDCF and AS-norm against the reference fixtures (`metrics.json`,
//! `asnorm.json`), produced by the official evaluation code.

mod common;

use common::*;
use nexttdnn::eval::metrics::Roc;
use nexttdnn::eval::score::AsNorm;
use tinyjson::JsonValue as Value;

// tinyjson parses numbers with Rust's correctly rounded `str::parse`, so the
// float64 values compare exactly.
fn json(name: &str) -> Value {
    std::fs::read_to_string(fixtures().join(name)).unwrap().parse().unwrap()
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Number(x) => *x,
        Value::Null => f64::INFINITY, // thresholds[0] = +inf is stored as null
        other => panic!("not a number: {other:?}"),
    }
}

fn arr(v: &Value) -> &Vec<Value> {
    v.get::<Vec<Value>>().expect("array")
}

fn f64s(v: &Value) -> Vec<f64> {
    arr(v).iter().map(num).collect()
}

#[test]
fn eer_and_min_dcf_match_reference_exactly() {
    let m = json("metrics.json");
    for set in ["gauss_1000", "ties_400", "tiny_6", "collinear_20"] {
        let s = &m[set];
        let scores = f64s(&s["scores"]);
        let labels: Vec<bool> = arr(&s["labels"]).iter().map(|l| num(l) == 1.0).collect();
        let roc = Roc::new(&scores, &labels).unwrap();
        assert_eq!(roc.fpr, f64s(&s["roc"]["fpr"]), "{set}: fpr");
        assert_eq!(roc.tpr, f64s(&s["roc"]["tpr"]), "{set}: tpr");
        let eer = roc.eer();
        let want = num(&s["eer_percent"]);
        assert!((eer.value - want).abs() < 1e-9, "{set}: EER {} vs {want}", eer.value);
        assert_eq!(eer.threshold, num(&s["eer_threshold"]), "{set}: EER threshold");
        for (p, key) in [(0.05, "mindcf_p0.05"), (0.01, "mindcf_p0.01")] {
            let d = roc.min_dcf(p, 1.0, 1.0);
            let want = num(&s[key]);
            assert!((d.value - want).abs() < 1e-9, "{set}: {key} {} vs {want}", d.value);
            assert_eq!(d.threshold, num(&s[format!("{key}_threshold").as_str()]), "{set}: {key} threshold");
        }
    }
    // The collinear set is the one where dropping intermediate points matters.
    assert!((num(&m["collinear_20"]["eer_percent"]) - 60.0).abs() < 1e-9);
}

/// The AS-norm fixture: the reference's scores, its embeddings and top-k.
struct AsNormFixture {
    a: Value,
    enrol: Vec<Vec<f32>>,
    test: Vec<Vec<f32>>,
    cohort: Vec<Vec<f32>>,
    top_k: usize,
}

fn asnorm_fixture() -> AsNormFixture {
    let a = json("asnorm.json");
    let emb = load(&fixtures().join("asnorm_embeddings.safetensors"));
    let rows = |k: &str| -> Vec<Vec<f32>> {
        let t = &emb[k];
        t.values.chunks(t.shape[1]).map(|c| c.to_vec()).collect()
    };
    let (enrol, test, cohort) = (rows("enrol"), rows("test"), rows("cohort"));
    let top_k = match &a["top_k"] {
        Value::String(s) => s.parse().unwrap(),
        v => num(v) as usize,
    };
    AsNormFixture { a, enrol, test, cohort, top_k }
}

#[test]
fn asnorm_matches_reference() {
    let AsNormFixture { a, enrol, test, cohort, top_k } = asnorm_fixture();
    let norm = AsNorm::new(&cohort, top_k);
    let trials = arr(&a["trials"]);
    let mut labels = vec![];
    let mut got = [vec![], vec![], vec![], vec![]];
    for tr in trials {
        let (e, t) = (num(&tr["enrol"]) as usize, num(&tr["test"]) as usize);
        labels.push(num(&tr["label"]) == 1.0);
        let raw = nexttdnn::eval::score::cosine(&enrol[e], &test[t]);
        let s = AsNorm::normalize(raw, norm.stats(&enrol[e]), norm.stats(&test[t]));
        for (i, v) in [s.raw, s.z, s.t, s.s].into_iter().enumerate() {
            got[i].push(v);
        }
    }
    for (i, key) in ["origin", "znorm", "tnorm", "snorm"].iter().enumerate() {
        let want = f64s(&a[*key]["scores"]);
        let err = got[i].iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "{key}: max abs {err:e}");
        let roc = Roc::new(&got[i], &labels).unwrap();
        assert!((roc.eer().value - num(&a[*key]["eer_percent"])).abs() < 1e-6, "{key} EER");
        assert!((roc.min_dcf(0.05, 1.0, 1.0).value - num(&a[*key]["mindcf_p005"])).abs() < 1e-6, "{key} minDCF");
    }
}

/// Today's definition, in float64 throughout: every cohort score as a
/// scalar dot product of normalised vectors, sorted, the top k kept.
fn stats_f64(emb: &[f32], cohort: &[Vec<f32>], k: usize) -> (f64, f64) {
    let unit = |v: &[f32]| -> Vec<f64> {
        let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        v.iter().map(|x| *x as f64 / n).collect()
    };
    let e = unit(emb);
    let mut s: Vec<f64> = cohort.iter().map(|c| unit(c).iter().zip(&e).map(|(a, b)| a * b).sum()).collect();
    s.sort_by(|a, b| b.partial_cmp(a).unwrap());
    s.truncate(k.min(s.len()));
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

#[test]
fn asnorm_matrix_products_equal_float64_scalar_scores() {
    let AsNormFixture { enrol, test, cohort, top_k, .. } = asnorm_fixture();
    // More rows than one block of the matrix product, and a top-k past the cohort's size.
    let mut all: Vec<Vec<f32>> = enrol.iter().chain(&test).cloned().collect();
    while all.len() < 2100 {
        let i = all.len();
        all.push(all[i % 7].iter().zip(&all[i % 11]).map(|(x, y)| x - 0.5 * y).collect());
    }
    for k in [top_k, 1, 2, cohort.len() + 10] {
        let norm = AsNorm::new(&cohort, k);
        let got = norm.stats_all(&all);
        assert_eq!(got.len(), all.len());
        for (e, s) in all.iter().zip(&got) {
            let (mean, std) = stats_f64(e, &cohort, k);
            assert!((s.mean - mean).abs() < 1e-6, "k {k}: mean {} vs {mean}", s.mean);
            assert!((s.std - std).abs() < 1e-6, "k {k}: std {} vs {std}", s.std);
        }
    }
}
