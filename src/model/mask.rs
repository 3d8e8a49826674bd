//! Frame masks for batches of utterances of different lengths.
//!
//! A batch is zero-padded to its longest utterance. Every operation of the
//! network that mixes frames must then see, for each utterance, exactly what
//! it would see for that utterance alone:
//! * the unpadded stem needs nothing: output frame `t` reads input frames
//!   `t..t+k`, all inside the utterance while `t` is a valid output frame;
//! * each depthwise convolution reads zeros past the utterance's true end
//!   ([`FrameMask::zero_padding`] before it);
//! * GRN's L2 norm over time sums valid frames only;
//! * the attentive pooling's softmax gives padded frames a weight of exactly 0
//!   ([`FrameMask::attention_bias`]).
//!
//! Everything else in the network works frame by frame, so padded frames hold
//! finite values that never reach a valid one.

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Added to the attention logits of padded frames: `exp` of it underflows to 0
/// (a finite value, so that no backend has to handle infinities).
const MASKED_LOGIT: f32 = -1.0e30;

/// Which frames of a padded batch `[B, ·, T]` belong to their utterance.
#[derive(Debug, Clone)]
pub struct FrameMask {
    /// 1 for valid frames, 0 for padding: `[B, 1, T]`, in the backbone's dtype.
    channels_first: Tensor<3>,
    /// The same, `[B, T, 1]`.
    channels_last: Tensor<3>,
    /// 0 for valid frames, [`MASKED_LOGIT`] for padding: `[B, 1, T]`, float32.
    attention: Tensor<3>,
}

impl FrameMask {
    /// The mask of a batch of `valid[b]` frames each, padded to `frames`; `None`
    /// when no utterance is padded (then the batch needs no masking at all).
    pub fn new(valid: &[usize], frames: usize, dtype: DType, device: &Device) -> Option<Self> {
        assert!(valid.iter().all(|&v| v >= 1 && v <= frames), "valid lengths {valid:?} outside 1..={frames}");
        if valid.iter().all(|&v| v == frames) {
            return None;
        }
        let b = valid.len();
        let ones: Vec<f32> =
            valid.iter().flat_map(|&v| (0..frames).map(move |t| if t < v { 1.0 } else { 0.0 })).collect();
        let bias: Vec<f32> = ones.iter().map(|&m| if m == 1.0 { 0.0 } else { MASKED_LOGIT }).collect();
        let channels_first = Tensor::<3>::from_data(TensorData::new(ones, [b, 1, frames]), device).cast(dtype);
        let channels_last = channels_first.clone().swap_dims(1, 2);
        let attention = Tensor::from_data(TensorData::new(bias, [b, 1, frames]), device);
        Some(Self { channels_first, channels_last, attention })
    }

    /// Zeroes padded frames of `[B, C, T]`.
    pub fn zero_padding(&self, x: Tensor<3>) -> Tensor<3> {
        x * self.channels_first.clone()
    }

    /// Zeroes padded frames of channels-last `[B, T, C]`.
    pub fn zero_padding_last(&self, x: Tensor<3>) -> Tensor<3> {
        x * self.channels_last.clone()
    }

    /// 1 for valid frames and 0 for padding, `[B, T]`.
    pub fn valid_frames(&self) -> Tensor<2> {
        let [b, t, _] = self.channels_last.dims();
        self.channels_last.clone().reshape([b, t])
    }

    /// Adds the attention bias to float32 logits `[B, D, T]`.
    pub fn attention_bias(&self, logits: Tensor<3>) -> Tensor<3> {
        logits + self.attention.clone()
    }
}

/// Zeroes padded frames of `[B, C, T]` if there is a mask.
pub fn zero_padding(mask: Option<&FrameMask>, x: Tensor<3>) -> Tensor<3> {
    match mask {
        Some(m) => m.zero_padding(x),
        None => x,
    }
}
