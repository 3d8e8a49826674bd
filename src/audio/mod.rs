//! Audio input: reading and checking WAV files.

pub mod augment;
pub mod m4a;
pub mod wav;

pub use wav::{decode_wav, read_file, read_wav, AudioError, Waveform};
