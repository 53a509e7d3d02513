"""pvllm.utils.hashing: the one place files, JSON and tensors are hashed (values checked against hashlib)."""

import hashlib

import torch

from pvllm.utils import hashing


def test_file_and_text_hashes_are_plain_sha256(tmp_path):
    data = bytes(range(256)) * 40_000  # > one block of 4 MiB: hashed in several reads
    f = tmp_path / "x.bin"
    f.write_bytes(data)
    assert hashing.file_sha256(f) == hashlib.sha256(data).hexdigest()
    assert hashing.text_sha256("ü") == hashlib.sha256("ü".encode()).hexdigest()
    assert hashing.json_sha256({"b": 1, "a": "ü"}) == hashlib.sha256('{"a": "ü", "b": 1}'.encode()).hexdigest()
    assert hashing.json_sha256({"a": 1, "b": 2}, 16) == hashing.json_sha256({"b": 2, "a": 1})[:16]


def test_file_digest_reads_both_ends_of_a_large_file(tmp_path):
    edge = hashing.EDGE
    data = b"a" * edge + b"m" * (4 * edge) + b"z" * edge
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    want = hashlib.sha256(str(len(data)).encode() + data[:edge] + data[-edge:]).hexdigest()[:16]
    assert hashing.file_digest(f) == want
    assert hashing.file_digest(f, whole=True) == hashlib.sha256(str(len(data)).encode() + data).hexdigest()[:16]
    f.write_bytes(data[:edge] + b"M" * (4 * edge) + data[-edge:])  # the middle changed: only `whole` sees it
    assert hashing.file_digest(f) == want and hashing.file_digest(f, whole=True) != want


def test_state_dict_hash_follows_names_shapes_and_values():
    lin = torch.nn.Linear(3, 2)
    h = hashing.state_dict_sha256(lin.state_dict())
    assert h == hashing.state_dict_sha256({k: v.clone() for k, v in lin.state_dict().items()})
    with torch.no_grad():
        lin.weight[0, 0] += 1e-3
    assert hashing.state_dict_sha256(lin.state_dict()) != h
