//! Every ggml type the reader knows, against the reference dequantiser of the
//! `gguf` package (PyPI, llama.cpp's own Python library) reading the same
//! file: random blocks (finite scales), written by `GgufWriter`, must
//! dequantise to the same `f32` bits. A missing `gguf` package fails the test
//! unless `TWINFLOW_SKIP_GGUF=1`; `.ci/run` installs it.

use std::process::Command;

use twinflow_models::gguf::{GgmlType, Gguf, GgufWriter, dequantize};
use twinflow_schemas::rng::SeededRng;

/// Reads every tensor of the file with gguf-py and writes its dequantised
/// values as little-endian `f32` to `<dir>/<name>.f32`.
const REFERENCE: &str = r#"
import sys, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
path, out = sys.argv[1], sys.argv[2]
for t in GGUFReader(path).tensors:
    values = dequantize(t.data, t.tensor_type).astype('<f4', copy=False).reshape(-1)
    values.tofile(f"{out}/{t.name}.f32")
    print(t.name, t.tensor_type.name, values.size)
"#;

fn gguf_py_available() -> bool {
    Command::new("python3").args(["-c", "import gguf, numpy"]).output().is_ok_and(|o| o.status.success())
}

/// A finite half with a moderate exponent (no infinities, NaNs or subnormals).
fn half(rng: &mut SeededRng) -> [u8; 2] {
    let sign = (rng.below(2) as u16) << 15;
    let exp = (5 + rng.below(12) as u16) << 10;
    (sign | exp | rng.below(1024) as u16).to_le_bytes()
}

/// `blocks` random blocks of `ty` whose float fields are finite.
fn random_blocks(ty: GgmlType, blocks: usize, rng: &mut SeededRng) -> Vec<u8> {
    let (_, size) = ty.block();
    let mut data: Vec<u8> = (0..blocks * size).map(|_| rng.below(256) as u8).collect();
    // Byte offsets of the f16 fields in a block (every element for F16).
    let halves: Vec<usize> = match ty {
        GgmlType::F16 => vec![0],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => vec![0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => vec![0, 2],
        GgmlType::Q2_K => vec![80, 82],
        GgmlType::Q3_K => vec![108],
        GgmlType::Q6_K => vec![208],
        GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8_K => vec![],
    };
    for block in data.chunks_exact_mut(size) {
        for &at in &halves {
            block[at..at + 2].copy_from_slice(&half(rng));
        }
        match ty {
            GgmlType::F32 | GgmlType::Q8_K => {
                let value = (rng.unit() as f32 - 0.5) * 8.0;
                block[0..4].copy_from_slice(&value.to_le_bytes());
            }
            // The upper half of a finite f32.
            GgmlType::BF16 => {
                block.copy_from_slice(&(((rng.unit() as f32 - 0.5) * 8.0).to_bits() >> 16).to_le_bytes()[..2])
            }
            _ => {}
        }
    }
    data
}

#[test]
fn every_type_dequantises_as_the_gguf_package_does_to_the_bit() {
    if !gguf_py_available() {
        twinflow_schemas::testing::tool_missing("gguf", "python3 -m pip install gguf==0.19.0");
        return;
    }
    let mut rng = SeededRng::new(21);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quants.gguf");
    let mut writer = GgufWriter::new();
    // Two rows of 512 elements each (two K-quant super-blocks per row).
    let dims = [512usize, 2];
    // Q8_K has no dequantiser in gguf-py (ggml only uses it for activations).
    let types: Vec<GgmlType> = GgmlType::ALL.into_iter().filter(|t| *t != GgmlType::Q8_K).collect();
    for ty in &types {
        let (block, _) = ty.block();
        writer.tensor(ty.name(), &dims, *ty, random_blocks(*ty, 1024 / block, &mut rng)).unwrap();
    }
    writer.write(&path).unwrap();

    let out = Command::new("python3").args(["-c", REFERENCE]).arg(&path).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "gguf-py failed: {}", String::from_utf8_lossy(&out.stderr));

    let gguf = Gguf::open(&path).unwrap();
    for ty in &types {
        let ours = gguf.tensor_f32(ty.name(), &dims).unwrap();
        let reference: Vec<f32> = std::fs::read(dir.path().join(format!("{}.f32", ty.name())))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(ours.len(), reference.len(), "{ty:?}");
        let differing = ours.iter().zip(&reference).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let first = ours.iter().zip(&reference).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            differing,
            0,
            "{ty:?}: {differing} of {} values differ, first at {first:?}: {:?} vs {:?}",
            ours.len(),
            first.map(|i| ours[i]),
            first.map(|i| reference[i])
        );
        assert!(ours.iter().any(|v| *v != 0.0), "{ty:?}: all zero");
    }
}

#[test]
fn q8_k_blocks_are_the_scale_times_the_bytes() {
    let mut block = 0.25f32.to_le_bytes().to_vec();
    block.extend((0..256).map(|i| (i as i8).wrapping_sub(100) as u8));
    block.extend([0u8; 32]);
    let x = dequantize(GgmlType::Q8_K, &block);
    assert_eq!(x.len(), 256);
    assert_eq!((x[0], x[100], x[255]), (-25.0, 0.0, 0.25 * f32::from(155u8 as i8)));
}
