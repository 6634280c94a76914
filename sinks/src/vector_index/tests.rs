//! Unit tests of [`VectorIndex`](super::VectorIndex): inserts, deletes and
//! key reuse, staged adds, and every storage quantization.

use twinflow_schemas::rng::SeededRng;

use super::*;

fn unit(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let v: Vec<f32> = (0..dim).map(|_| rng.unit() as f32 - 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

#[test]
fn inserts_deletes_and_key_reuse() {
    // f32 storage, so the graph's cosines are exact here.
    let config = AnnConfig { quantization: "f32".into(), ..AnnConfig::default() };
    let mut index = VectorIndex::new(16, &config).unwrap();
    for i in 0..200u64 {
        index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 16))).unwrap();
    }
    assert_eq!(index.len(), 200);
    let hits = index.search(&unit(7, 16), 3, None).unwrap();
    assert_eq!(hits[0].1, Hash128(7));
    assert!((hits[0].0 - 1.0).abs() < 1e-5);
    // Deleted rows are never returned, and their keys are reused.
    index.set(Hash128(7), "m", None).unwrap();
    assert!(index.search(&unit(7, 16), 10, None).unwrap().iter().all(|(_, c)| *c != Hash128(7)));
    index.set(Hash128(1000), "m", Some(&unit(1000, 16))).unwrap();
    assert_eq!(index.chunks.len(), 200, "the freed key was reused");
    assert_eq!(index.search(&unit(1000, 16), 1, None).unwrap()[0].1, Hash128(1000));
    // A second model's vector of the same chunk: one hit for the chunk.
    index.set(Hash128(3), "other", Some(&unit(3, 16))).unwrap();
    let hits = index.search(&unit(3, 16), 5, None).unwrap();
    assert_eq!(hits.iter().filter(|(_, c)| *c == Hash128(3)).count(), 1);
    // Filters apply inside the search.
    let even = |c: &Hash128| c.0 % 2 == 0;
    let hits = index.search(&unit(5, 16), 10, Some(&even)).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|(_, c)| c.0 % 2 == 0));
    // Wrong dimensions are ignored, not errors.
    index.set(Hash128(5000), "m", Some(&[1.0, 0.0])).unwrap();
    assert!(index.search(&[1.0, 0.0], 3, None).unwrap().is_empty());
}

#[test]
fn staged_vectors_stay_invisible_until_published() {
    let config = AnnConfig { quantization: "f32".into(), ..AnnConfig::default() };
    let mut index = VectorIndex::new(16, &config).unwrap();
    for i in 0..100u64 {
        index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 16))).unwrap();
    }
    let vectors: Vec<Vec<f32>> = (100..110u64).map(|i| unit(i, 16)).collect();
    let rows: Vec<(Hash128, &str, &[f32])> =
        (100..110u64).zip(&vectors).map(|(i, v)| (Hash128(u128::from(i)), "m", v.as_slice())).collect();
    let mut staged = index.stage(&rows).unwrap();
    index.add_staged(&mut staged, &rows);
    // Added to the graph, not yet published: no search sees them.
    let hits = index.search(&unit(105, 16), 5, None).unwrap();
    assert!(hits.iter().all(|(_, c)| c.0 < 100), "{hits:?}");
    // Published where live (all but 107): found; 107's key is freed.
    index.publish(staged, |c, _| c.0 != 107).unwrap();
    assert_eq!(index.search(&unit(105, 16), 1, None).unwrap()[0].1, Hash128(105));
    assert!(index.search(&unit(107, 16), 10, None).unwrap().iter().all(|(_, c)| c.0 != 107));
    assert_eq!(index.len(), 109);
    assert_eq!(index.free.len(), 1);
}

#[test]
fn every_quantization_finds_the_vector_itself() {
    for quantization in ["bf16", "f16", "f32"] {
        let config = AnnConfig { quantization: quantization.into(), ..AnnConfig::default() };
        let mut index = VectorIndex::new(32, &config).unwrap();
        for i in 0..300u64 {
            index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 32))).unwrap();
        }
        let hits = index.search(&unit(42, 32), 1, None).unwrap();
        assert_eq!(hits[0].1, Hash128(42), "{quantization}");
        assert!((hits[0].0 - 1.0).abs() < 2e-2, "{quantization}: {}", hits[0].0);
    }
    for bad in ["f8", "i8"] {
        let config = AnnConfig { quantization: bad.into(), ..AnnConfig::default() };
        assert!(VectorIndex::new(4, &config).unwrap_err().to_string().contains(bad));
    }
}
