"""Seeds for the model_file target: small model files (one tensor or none)
carrying a real config, as `SpeakerModel::save` lays them out."""
import json
import struct
import sys
from pathlib import Path

out = Path(sys.argv[1])
config = Path(sys.argv[2]).read_text()


def write(name, meta, tensors):
    header, data = {}, b""
    for tname, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[tname] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = meta
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    (out / name).write_bytes(struct.pack("<Q", len(text)) + text + data)


meta = {"format": "nexttdnn-model", "format_version": "2", "crate_version": "0.1.0", "config": config,
        "threshold": "0.47", "payload_sha256": "0" * 64}
write("small.safetensors", meta, {"aam.weight": [0.5, -0.25, 1.0, 2.0]})
write("empty.safetensors", dict(meta, format_version="1"), {})
