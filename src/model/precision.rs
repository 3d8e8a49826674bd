//! Reduced-precision inference.
//!
//! Burn 0.22 has no automatic mixed precision, so the split is explicit and
//! fixed: the front end, the pooling statistics, BatchNorm and the embedding
//! layer stay in f32; the backbone (stem, blocks, MFA) runs in the chosen
//! precision. Inside it, the one reduction that can leave f16's range, GRN's
//! L2 norm over time (a sum of squares over hundreds of frames), is taken in
//! f32. Training is f32 only.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};

use super::NextTdnn;

/// Compute precision of the backbone at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "half" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}` (expected f32, f16 or bf16)")),
        }
    }
}

/// Casts every float parameter it visits.
struct Cast(FloatDType);

impl ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(self.0))
    }
}

impl NextTdnn {
    /// The same network with its backbone parameters in `precision` (the
    /// head stays f32); `forward` then casts at the two boundaries.
    pub fn with_precision(self, precision: Precision) -> Self {
        if precision == Precision::F32 {
            return self;
        }
        let dtype = precision.dtype();
        let mut cast = Cast(dtype);
        Self {
            stem: self.stem.map(&mut cast),
            stem_norm: self.stem_norm.map(&mut cast),
            stages: self.stages.map(&mut cast),
            mfa_conv: self.mfa_conv.map(&mut cast),
            mfa_norm: self.mfa_norm.map(&mut cast),
            head: self.head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Precision;

    #[test]
    fn parses_names_and_rejects_others_clearly() {
        assert_eq!("F16".parse::<Precision>(), Ok(Precision::F16));
        assert_eq!("bfloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("fp32".parse::<Precision>(), Ok(Precision::F32));
        let err = "f8".parse::<Precision>().unwrap_err();
        assert!(err.contains("`f8`") && err.contains("f32, f16 or bf16"), "{err}");
    }
}
