//! A model as an ONNX graph of standard operators: the front end (with the
//! `waveform` input), the network and the pooling head, float32
//! throughout, inference mode (BatchNorm with its running statistics).

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use burn::tensor::Tensor;
use prost::Message;

use super::graph::{Attr, Graph};
use super::proto::{
    Dimension, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto,
    TypeProtoTensor, ValueInfoProto, FLOAT,
};
use crate::config::FrontendConfig;
use crate::features::{hamming_periodic, mel_filterbank};
use crate::model::block::{Block, Ffn, Msc};
use crate::model::layers::{BatchNorm, Conv1d, Grn, LayerNorm, Linear};
use crate::model::pooling::PoolingHead;
use crate::model::NextTdnn;
use crate::weights::{host_from_data, SpeakerModel};

/// What the graph takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnnxInput {
    /// The 16 kHz waveform `[batch, samples]`; the front end is in the graph.
    Waveform,
    /// Log-mel features `[batch, n_mels, frames]`, as the front end gives them.
    Features,
}

/// The opsets the exporter writes: 17 brings `LayerNormalization`.
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;
/// ONNX IR version 8 (opsets up to 18 and beyond read it).
const IR_VERSION: i64 = 8;
pub const INPUT_WAVEFORM: &str = "waveform";
pub const INPUT_FEATURES: &str = "features";
pub const OUTPUT: &str = "embedding";

/// The serialised ONNX model of `model`; `metadata` goes into the model's
/// metadata properties (with the settings an exporter always records).
pub fn export(
    model: &SpeakerModel,
    input: OnnxInput,
    opset: i64,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    ensure!(
        OPSETS.contains(&opset),
        "opset {opset} is not supported; choose one of {}..={}",
        OPSETS.start(),
        OPSETS.end()
    );
    let cfg = &model.config;
    let mut g = Graph::new(opset);
    let (input_name, input_dims) = match input {
        OnnxInput::Waveform => (INPUT_WAVEFORM, vec![dyn_dim("batch"), dyn_dim("samples")]),
        OnnxInput::Features => {
            (INPUT_FEATURES, vec![dyn_dim("batch"), fixed_dim(cfg.frontend.n_mels), dyn_dim("frames")])
        }
    };
    let feats = match input {
        OnnxInput::Waveform => frontend(&mut g, input_name, &cfg.frontend),
        OnnxInput::Features => input_name.to_string(),
    };
    network(&mut g, &feats, &model.net);
    g.rename_last(OUTPUT);

    let mut props = metadata;
    let f = &cfg.frontend;
    for (k, v) in [
        ("sample_rate", f.sample_rate.to_string()),
        ("output_dim", cfg.model.embedding_dim.to_string()),
        ("input", format!("{input:?}").to_lowercase()),
        ("config", cfg.name.clone()),
        ("n_fft", f.n_fft.to_string()),
        ("win_length", f.win_length.to_string()),
        ("hop_length", f.hop_length.to_string()),
        ("n_mels", f.n_mels.to_string()),
        ("f_min", f.f_min.to_string()),
        ("f_max", f.f_max.to_string()),
        ("pre_emphasis", f.pre_emphasis.to_string()),
        ("log_offset", f.log_offset.to_string()),
    ] {
        props.insert(k.to_string(), v);
    }
    let graph = GraphProto {
        node: std::mem::take(&mut g.nodes),
        name: cfg.name.clone(),
        initializer: std::mem::take(&mut g.initializers),
        doc_string: format!("NeXt-TDNN speaker embedding ({})", cfg.name),
        input: vec![value_info(input_name, input_dims)],
        output: vec![value_info(OUTPUT, vec![dyn_dim("batch"), fixed_dim(cfg.model.embedding_dim)])],
    };
    let proto = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "nexttdnn".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: String::new(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        metadata_props: props.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
    };
    Ok(proto.encode_to_vec())
}

fn dyn_dim(name: &str) -> Dimension {
    Dimension { dim_value: None, dim_param: Some(name.to_string()) }
}

fn fixed_dim(n: usize) -> Dimension {
    Dimension { dim_value: Some(n as i64), dim_param: None }
}

fn value_info(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: FLOAT, shape: Some(TensorShapeProto { dim: dims }) }),
        }),
    }
}

/// A parameter of the network as a float32 initialiser; its name.
fn param<const D: usize>(g: &mut Graph, hint: &str, t: Tensor<D>) -> String {
    let h = host_from_data(t.into_data()).expect("float parameters convert to float32");
    g.init(hint, &h.shape, &h.values)
}

/// `[B, L]` waveform → `[B, n_mels, T]` centred log-mel features: the
/// pre-emphasis (first sample from the second), the centred STFT with
/// reflect padding as a strided convolution with a windowed DFT basis, the
/// power, the mel bands, the log and the mean over time subtracted.
fn frontend(g: &mut Graph, wav: &str, f: &FrontendConfig) -> String {
    let first = g.slice(wav, 1, 2, 1);
    let rest = g.slice(wav, 0, -1, 1);
    let prev = g.concat(&[&first, &rest], 1);
    let coeff = g.scalar(f.pre_emphasis as f32);
    let scaled = g.mul(&prev, &coeff);
    let pre = g.sub(wav, &scaled);
    let axes = g.ints("axes", &[1]);
    let x = g.op("Unsqueeze", &[&pre, &axes], vec![]); // [B, 1, L]
    let half = (f.n_fft / 2) as i64;
    let pads = g.ints("pads", &[0, 0, half, 0, 0, half]);
    let x = g.op("Pad", &[&x, &pads], vec![("mode", Attr::Str("reflect"))]);
    let (basis, bins) = dft_basis(f);
    let w = g.init("dft_basis", &[2 * bins, 1, f.n_fft], &basis);
    let spec = g.op(
        "Conv",
        &[&x, &w],
        vec![("strides", Attr::Ints(vec![f.hop_length as i64])), ("kernel_shape", Attr::Ints(vec![f.n_fft as i64]))],
    ); // [B, 2F, T]
    let re = g.slice(&spec, 0, bins as i64, 1);
    let im = g.slice(&spec, bins as i64, 2 * bins as i64, 1);
    let re2 = g.mul(&re, &re);
    let im2 = g.mul(&im, &im);
    let power = g.add(&re2, &im2); // [B, F, T]
    let power = g.transpose(&power, &[0, 2, 1]); // [B, T, F]
    let fb = g.init("mel_filterbank", &[bins, f.n_mels], &mel_filterbank(f));
    let mel = g.op("MatMul", &[&power, &fb], vec![]); // [B, T, M]
    let offset = g.scalar(f.log_offset as f32);
    let shifted = g.add(&mel, &offset);
    let logmel = g.op("Log", &[&shifted], vec![]);
    let mean = g.reduce("ReduceMean", &logmel, &[1]);
    let centred = g.sub(&logmel, &mean);
    g.transpose(&centred, &[0, 2, 1])
}

/// The windowed DFT basis `[2F, 1, n_fft]`: `F` cosine rows, then `F` sine
/// rows, the periodic Hamming window centred in `n_fft` samples as
/// `torch.stft` places it.
fn dft_basis(f: &FrontendConfig) -> (Vec<f32>, usize) {
    let n = f.n_fft;
    let bins = n / 2 + 1;
    let mut window = vec![0.0f64; n];
    let left = (n - f.win_length) / 2;
    for (i, w) in hamming_periodic(f.win_length).into_iter().enumerate() {
        window[left + i] = w as f64;
    }
    let mut basis = vec![0.0f32; 2 * bins * n];
    for k in 0..bins {
        for (t, w) in window.iter().enumerate() {
            // k·t mod n keeps the angle small, so it is exact in f64.
            let angle = 2.0 * std::f64::consts::PI * ((k * t) % n) as f64 / n as f64;
            basis[k * n + t] = (w * angle.cos()) as f32;
            basis[(bins + k) * n + t] = (-w * angle.sin()) as f32;
        }
    }
    (basis, bins)
}

/// `[B, n_mels, T]` features → `[B, E]` embedding.
fn network(g: &mut Graph, feats: &str, net: &NextTdnn) -> String {
    let x = conv1d(g, feats, &net.stem);
    let mut x = layer_norm_channels_first(g, &x, &net.stem_norm);
    let mut outs = vec![];
    for stage in &net.stages {
        for block in stage {
            x = block_forward(g, &x, block);
        }
        outs.push(x.clone());
    }
    let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let cat = g.concat(&refs, 1);
    let mfa = conv1d(g, &cat, &net.mfa_conv);
    let mfa = layer_norm_channels_first(g, &mfa, &net.mfa_norm);
    pooling(g, &mfa, &net.head)
}

fn block_forward(g: &mut Graph, x: &str, block: &Block) -> String {
    let x = match (&block.msc, &block.depthwise) {
        (Some(msc), _) => msc_forward(g, x, msc),
        (None, Some(dw)) => {
            let y = conv1d(g, x, dw);
            g.add(x, &y)
        }
        (None, None) => x.to_string(),
    };
    ffn_forward(g, &x, &block.ffn)
}

/// Multi-scale convolutions: projection, one grouped convolution per
/// channel chunk, GELU, pointwise linear, residual.
fn msc_forward(g: &mut Graph, x: &str, msc: &Msc) -> String {
    let y = conv1d(g, x, &msc.projection);
    let n = msc.branches.len();
    let chunk = (msc.projection.weight.dims()[0] / n) as i64;
    let parts: Vec<String> = msc
        .branches
        .iter()
        .enumerate()
        .map(|(i, conv)| {
            let part = if n == 1 { y.clone() } else { g.slice(&y, i as i64 * chunk, (i as i64 + 1) * chunk, 1) };
            conv1d(g, &part, conv)
        })
        .collect();
    let y = if n == 1 {
        parts[0].clone()
    } else {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        g.concat(&refs, 1)
    };
    let y = gelu(g, &y);
    let y = g.transpose(&y, &[0, 2, 1]);
    let y = linear(g, &y, &msc.pointwise);
    let y = g.transpose(&y, &[0, 2, 1]);
    g.add(x, &y)
}

/// LN, expand, GELU, GRN, project, residual; channels last inside.
fn ffn_forward(g: &mut Graph, x: &str, ffn: &Ffn) -> String {
    let y = g.transpose(x, &[0, 2, 1]);
    let y = layer_norm_last(g, &y, &ffn.norm);
    let y = linear(g, &y, &ffn.expand);
    let y = gelu(g, &y);
    let y = grn(g, &y, &ffn.grn);
    let y = linear(g, &y, &ffn.project);
    let y = g.transpose(&y, &[0, 2, 1]);
    g.add(x, &y)
}

/// Global response normalisation of `[B, T, C]`: the L2 norm over time,
/// divided by its mean over channels plus eps.
fn grn(g: &mut Graph, x: &str, grn: &Grn) -> String {
    let norm = g.reduce("ReduceL2", x, &[1]); // [B, 1, C]
    let mean = g.reduce("ReduceMean", &norm, &[2]);
    let eps = g.scalar(grn.eps as f32);
    let denom = g.add(&mean, &eps);
    let n = g.div(&norm, &denom);
    let gamma = param(g, "grn_gamma", grn.gamma.val());
    let beta = param(g, "grn_beta", grn.beta.val());
    let xn = g.mul(x, &n);
    let scaled = g.mul(&xn, &gamma);
    let shifted = g.add(&scaled, &beta);
    g.add(&shifted, x)
}

/// Attentive statistics pooling, then BN, linear, BN.
fn pooling(g: &mut Graph, h: &str, head: &PoolingHead) -> String {
    let a = conv1d(g, h, &head.attn_conv1);
    let a = batch_norm(g, &a, &head.attn_bn);
    let a = g.op("Tanh", &[&a], vec![]);
    let e = conv1d(g, &a, &head.attn_conv2);
    let w = g.op("Softmax", &[&e], vec![("axis", Attr::Int(2))]);
    let wh = g.mul(&w, h);
    let mu = g.reduce("ReduceSum", &wh, &[2]); // [B, D, 1]
    let hh = g.mul(h, h);
    let whh = g.mul(&w, &hh);
    let m2 = g.reduce("ReduceSum", &whh, &[2]);
    let mu2 = g.mul(&mu, &mu);
    let var = g.sub(&m2, &mu2);
    let floor = g.scalar(head.var_floor as f32);
    let var = g.op("Max", &[&var, &floor], vec![]);
    let sigma = g.op("Sqrt", &[&var], vec![]);
    let stats = g.concat(&[&mu, &sigma], 1); // [B, 2D, 1]
    let stats = g.op("Flatten", &[&stats], vec![("axis", Attr::Int(1))]); // [B, 2D]
    let s = batch_norm(g, &stats, &head.stats_bn);
    let fc = linear(g, &s, &head.fc);
    batch_norm(g, &fc, &head.embed_bn)
}

fn conv1d(g: &mut Graph, x: &str, conv: &Conv1d) -> String {
    let kernel = conv.weight.dims()[2] as i64;
    let w = param(g, "conv_w", conv.weight.val());
    let b = param(g, "conv_b", conv.bias.val());
    let p = conv.padding as i64;
    g.op(
        "Conv",
        &[x, &w, &b],
        vec![
            ("group", Attr::Int(conv.groups as i64)),
            ("kernel_shape", Attr::Ints(vec![kernel])),
            ("pads", Attr::Ints(vec![p, p])),
        ],
    )
}

/// `x · W + b` over the last axis (our weight is `[in, out]`).
fn linear(g: &mut Graph, x: &str, lin: &Linear) -> String {
    let w = param(g, "linear_w", lin.weight.val());
    let b = param(g, "linear_b", lin.bias.val());
    let y = g.op("MatMul", &[x, &w], vec![]);
    g.add(&y, &b)
}

fn layer_norm_last(g: &mut Graph, x: &str, ln: &LayerNorm) -> String {
    let w = param(g, "ln_w", ln.weight.val());
    let b = param(g, "ln_b", ln.bias.val());
    g.op("LayerNormalization", &[x, &w, &b], vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(ln.eps as f32))])
}

fn layer_norm_channels_first(g: &mut Graph, x: &str, ln: &LayerNorm) -> String {
    let y = g.transpose(x, &[0, 2, 1]);
    let y = layer_norm_last(g, &y, ln);
    g.transpose(&y, &[0, 2, 1])
}

/// Inference-mode BatchNorm of `[B, C]` or `[B, C, T]`.
fn batch_norm(g: &mut Graph, x: &str, bn: &BatchNorm) -> String {
    let w = param(g, "bn_w", bn.weight.val());
    let b = param(g, "bn_b", bn.bias.val());
    let m = param(g, "bn_mean", bn.running_mean.value());
    let v = param(g, "bn_var", bn.running_var.value());
    g.op("BatchNormalization", &[x, &w, &b, &m, &v], vec![("epsilon", Attr::Float(bn.eps as f32))])
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`.
fn gelu(g: &mut Graph, x: &str) -> String {
    let inv_sqrt2 = g.scalar(std::f32::consts::FRAC_1_SQRT_2);
    let scaled = g.mul(x, &inv_sqrt2);
    let erf = g.op("Erf", &[&scaled], vec![]);
    let one = g.scalar(1.0);
    let onep = g.add(&erf, &one);
    let half = g.scalar(0.5);
    let hx = g.mul(x, &half);
    g.mul(&hx, &onep)
}
