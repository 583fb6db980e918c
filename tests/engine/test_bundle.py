"""Tests for engine.archive and engine.bundle: archive intake and the ONNX safety gate.

Every model here is built with onnx.helper and every tokenizer is trained in the
test, so the suite needs no network and no Django.
"""

from __future__ import annotations

import builtins
import copy
import gzip
import io
import json
import os
import pickle
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from engine.archive import (
    BundleError,
    Limits,
    extract_archive,
    materialise_bundle,
)
from engine.bundle import inspect_bundle, sha256_file

OPSET = [helper.make_opsetid("", 17)]
MS_OPSET = [*OPSET, helper.make_opsetid("com.microsoft", 1)]
VOCAB, HIDDEN, HEADS, HEAD_DIM, LABELS = 16, 8, 2, 4, 3
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ builders


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def weight(name, shape, dtype=np.float32):
    # Random values keep archives incompressible, so ratio checks stay quiet.
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(dtype), name)


def make(nodes, inputs, outputs, inits=(), opsets=OPSET, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def lm_model(*, layers=2, merged=False, gqa=False, logits_rank=3, logits="logits"):
    """A tiny causal LM (or classifier) signature: Gather embedding + MatMul head."""
    inputs = [
        vi("input_ids", TensorProto.INT64, ["batch", "seq"]),
        vi("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["hidden"])]
    inits = [weight("embed", [VOCAB, HIDDEN])]
    if logits_rank == 2:
        nodes += [
            helper.make_node(
                "ReduceMean", ["hidden"], ["pooled"], axes=[1], keepdims=0
            ),
            helper.make_node("MatMul", ["pooled", "head"], [logits]),
        ]
        inits.append(weight("head", [HIDDEN, LABELS]))
        outputs = [vi(logits, TensorProto.FLOAT, ["batch", LABELS])]
    else:
        nodes.append(helper.make_node("MatMul", ["hidden", "head"], [logits]))
        inits.append(weight("head", [HIDDEN, VOCAB]))
        shape = ["batch", "seq", VOCAB, 1][:logits_rank]
        outputs = [vi(logits, TensorProto.FLOAT, shape)]
    for i in range(layers):
        for kv in ("key", "value"):
            shape = ["batch", HEADS, "past", HEAD_DIM]
            inputs.append(vi(f"past_key_values.{i}.{kv}", TensorProto.FLOAT, shape))
            outputs.append(vi(f"present.{i}.{kv}", TensorProto.FLOAT, shape))
            nodes.append(
                helper.make_node(
                    "Identity", [f"past_key_values.{i}.{kv}"], [f"present.{i}.{kv}"]
                )
            )
    if merged:
        inputs.append(vi("use_cache_branch", TensorProto.BOOL, [1]))
    opsets = OPSET
    if gqa:
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                ["hidden"],
                ["attn"],
                domain="com.microsoft",
                num_heads=HEADS,
                kv_num_heads=HEADS,
            )
        )
        opsets = MS_OPSET
    return make(nodes, inputs, outputs, inits, opsets)


def generic_model():
    """skl2onnx-style linear model: float_input [N, 4] -> variable [N, 3]."""
    nodes = [
        helper.make_node("MatMul", ["float_input", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["variable"]),
    ]
    return make(
        nodes,
        [vi("float_input", TensorProto.FLOAT, [None, 4])],
        [vi("variable", TensorProto.FLOAT, [None, 3])],
        [weight("W", [4, 3]), weight("B", [3])],
    )


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory) -> str:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sentences = [
        "the agency registers a model",
        "the model is evaluated on a cpu",
        "a small language model answers questions",
    ]
    tok.train_from_iterator(
        sentences, trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path.read_text()


@pytest.fixture
def bundle(tmp_path, tokenizer_json):
    """Write a bundle directory: bundle(model, tokenizer=True, external=None, files)."""

    def write(model, *, tokenizer=True, external=None, files=None):
        root = tmp_path / "bundle"
        root.mkdir(exist_ok=True)
        if external:
            onnx.save_model(
                copy.deepcopy(model),
                root / "model.onnx",
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=external,
                size_threshold=0,
            )
        else:
            (root / "model.onnx").write_bytes(model.SerializeToString())
        if tokenizer:
            (root / "tokenizer.json").write_text(tokenizer_json)
        for fname, data in (files or {}).items():
            (root / fname).write_bytes(data)
        return root

    return write


def forge_external(model, name, location, *, offset=None, length=None):
    """Point initializer `name` at external data without writing any."""
    t = next(t for t in model.graph.initializer if t.name == name)
    nbytes = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": offset, "length": length}
    if length is None:
        entries["length"] = str(nbytes)
    for key, value in entries.items():
        if value is not None:
            t.external_data.add(key=key, value=str(value))
    return model


def refused(code, fn, *args, **kwargs) -> BundleError:
    with pytest.raises(BundleError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    assert str(info.value)  # a sentence for a person, never empty
    return info.value


def assert_nothing_left(dest: Path):
    assert not dest.exists() or not any(dest.iterdir())


def make_zip(path, members):
    """members: (name or ZipInfo, bytes) pairs; duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def tar_info(name, data=b"", type_=tarfile.REGTYPE, **attrs):
    info = tarfile.TarInfo(name)
    info.type, info.size = type_, len(data) if type_ == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, (io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


def make_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for info, fileobj in members:
            tf.addfile(info, fileobj)
    return path


def central_entries(data: bytes):
    """Yield (offset, name) for each zip central-directory entry."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        yield at, data[at + 46 : at + 46 + name_len]
        at = data.find(b"PK\x01\x02", at + 46)


# ------------------------------------------------------------------ archives


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"civitas" * 1000)
    assert sha256_file(path, chunk_size=7) == (
        __import__("hashlib").sha256(b"civitas" * 1000).hexdigest()
    )


def test_extract_zip_writes_files_dirs_and_nested_archive_as_plain_file(tmp_path):
    nested = make_zip(tmp_path / "inner.zip", [("x.txt", b"inner")]).read_bytes()
    archive = make_zip(
        tmp_path / "b.zip",
        [
            ("bundle/", b""),
            ("bundle/model.onnx", b"m"),
            ("bundle/sub/w.bin", b"w" * 10),
            ("bundle/inner.zip", nested),
        ],
    )
    dest = tmp_path / "out"
    names = extract_archive(archive, dest)
    assert names == ["bundle/model.onnx", "bundle/sub/w.bin", "bundle/inner.zip"]
    assert (dest / "bundle/inner.zip").read_bytes() == nested
    assert not (dest / "bundle/x.txt").exists()
    assert stat.S_IMODE((dest / "bundle/sub/w.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "bundle/sub").stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_extract_tar_skips_root_entry_and_writes_members(tmp_path, mode):
    archive = make_tar(
        tmp_path / "b.tar",
        [
            tar_info("./", type_=tarfile.DIRTYPE),
            tar_info("./model.onnx", b"abc"),
            tar_info("sub/tokenizer.json", b"{}"),
        ],
        mode,
    )
    dest = tmp_path / "out"
    assert extract_archive(archive, dest) == ["model.onnx", "sub/tokenizer.json"]
    assert (dest / "model.onnx").read_bytes() == b"abc"


UNSAFE_NAMES = ["../x", "/etc/x", "a\\b", "C:/x", "a/../../x", "a\nb", ""]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_a4_zip_unsafe_names_are_refused_before_extraction(tmp_path, name):
    archive = make_zip(
        tmp_path / "b.zip", [("ok.txt", b"ok"), (zipfile.ZipInfo(name), b"x")]
    )
    dest = tmp_path / "out"
    refused("unsafe_path", extract_archive, archive, dest)
    assert_nothing_left(dest)


@pytest.mark.parametrize("name", UNSAFE_NAMES[:-1])
def test_a4_tar_unsafe_names_are_refused_before_extraction(tmp_path, name):
    archive = make_tar(
        tmp_path / "b.tgz", [tar_info("ok.txt", b"ok"), tar_info(name, b"x")]
    )
    dest = tmp_path / "out"
    refused("unsafe_path", extract_archive, archive, dest)
    assert_nothing_left(dest)


def test_a4_zip_name_with_nul_byte_is_refused(tmp_path):
    path = make_zip(tmp_path / "b.zip", [("evilXname", b"x")])
    path.write_bytes(path.read_bytes().replace(b"evilXname", b"evil\x00name"))
    refused("unsafe_path", extract_archive, path, tmp_path / "out")


@pytest.mark.parametrize(
    ("type_", "code"),
    [
        (tarfile.SYMTYPE, "link_member"),
        (tarfile.LNKTYPE, "link_member"),
        (tarfile.CHRTYPE, "special_member"),
        (tarfile.BLKTYPE, "special_member"),
        (tarfile.FIFOTYPE, "special_member"),
        (b"V", "special_member"),
    ],
)
def test_a4_tar_links_devices_and_fifos_are_refused(tmp_path, type_, code):
    member = tar_info("evil", type_=type_, linkname="/etc/passwd")
    archive = make_tar(tmp_path / "b.tgz", [tar_info("ok.txt", b"ok"), member])
    dest = tmp_path / "out"
    err = refused(code, extract_archive, archive, dest)
    assert err.member == "evil"
    assert_nothing_left(dest)


def test_a5_tar_symlink_then_write_through_it_is_refused_at_prescan(tmp_path):
    # The CVE-2025-4517 family: a link followed by a member written through it.
    archive = make_tar(
        tmp_path / "b.tgz",
        [
            tar_info("ok.txt", b"ok"),
            tar_info("escape", type_=tarfile.SYMTYPE, linkname="/tmp"),
            tar_info("escape/pwned", b"x"),
        ],
    )
    dest = tmp_path / "out"
    refused("link_member", extract_archive, archive, dest)
    assert_nothing_left(dest)
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    ("mode", "code"),
    [(stat.S_IFLNK | 0o777, "link_member"), (stat.S_IFIFO | 0o644, "special_member")],
)
def test_a4_zip_unix_symlink_and_fifo_entries_are_refused(tmp_path, mode, code):
    info = zipfile.ZipInfo("link")
    info.create_system, info.external_attr = 3, mode << 16
    archive = make_zip(tmp_path / "b.zip", [("ok.txt", b"ok"), (info, b"/etc/passwd")])
    dest = tmp_path / "out"
    refused(code, extract_archive, archive, dest)
    assert_nothing_left(dest)


def test_zip_encrypted_entry_is_refused(tmp_path):
    data = bytearray(make_zip(tmp_path / "b.zip", [("a.txt", b"a")]).read_bytes())
    for at, _ in central_entries(bytes(data)):
        data[at + 8] |= 0x1
    (tmp_path / "b.zip").write_bytes(bytes(data))
    refused("special_member", extract_archive, tmp_path / "b.zip", tmp_path / "out")


@pytest.mark.parametrize(
    "members",
    [
        [("a.txt", b"1"), ("a.txt", b"2")],
        [("a.txt", b"1"), ("./a.txt", b"2")],
        [("a", b"file"), ("a/b", b"under a file")],
    ],
)
def test_duplicate_or_clashing_names_are_refused(tmp_path, members):
    refused(
        "unsafe_path",
        extract_archive,
        make_zip(tmp_path / "b.zip", members),
        tmp_path / "out",
    )
    tar = make_tar(tmp_path / "b.tgz", [tar_info(n, d) for n, d in members])
    refused("unsafe_path", extract_archive, tar, tmp_path / "out2")


def test_a6_too_many_files_is_refused(tmp_path):
    members = [(f"f{i}.txt", b"x") for i in range(5)]
    limits = Limits(max_files=4)
    refused(
        "too_many_files",
        extract_archive,
        make_zip(tmp_path / "b.zip", members),
        tmp_path / "out",
        limits=limits,
    )
    tar = make_tar(tmp_path / "b.tgz", [tar_info(n, d) for n, d in members])
    refused("too_many_files", extract_archive, tar, tmp_path / "out", limits=limits)
    assert_nothing_left(tmp_path / "out")


def test_a6_declared_total_over_cap_is_refused(tmp_path):
    members = [("a.bin", os.urandom(600)), ("b.bin", os.urandom(600))]
    limits = Limits(max_total_bytes=1000)
    refused(
        "too_large",
        extract_archive,
        make_zip(tmp_path / "b.zip", members),
        tmp_path / "out",
        limits=limits,
    )
    tar = make_tar(tmp_path / "b.tgz", [tar_info(n, d) for n, d in members])
    refused("too_large", extract_archive, tar, tmp_path / "out", limits=limits)
    assert_nothing_left(tmp_path / "out")


def test_a6_zip_ratio_bomb_member_is_refused(tmp_path):
    # 256 KiB of noise keeps the whole archive near 17x; only the member is a bomb.
    archive = make_zip(
        tmp_path / "b.zip",
        [("ok.bin", os.urandom(256 << 10)), ("zeros.bin", bytes(4 << 20))],
    )
    dest = tmp_path / "out"
    err = refused("compression_ratio", extract_archive, archive, dest)
    assert err.member == "zeros.bin"
    assert_nothing_left(dest)


def test_a6_tar_gz_whole_archive_ratio_bomb_is_refused(tmp_path):
    archive = make_tar(tmp_path / "b.tgz", [tar_info("zeros.bin", bytes(4 << 20))])
    refused("compression_ratio", extract_archive, archive, tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_a6_zip_member_larger_than_declared_is_stopped_by_byte_counter(tmp_path):
    path = make_zip(
        tmp_path / "b.zip",
        [("first.txt", b"written first"), ("liar.bin", os.urandom(300_000))],
    )
    data = bytearray(path.read_bytes())
    for at, name in central_entries(bytes(data)):
        if name == b"liar.bin":
            struct.pack_into("<I", data, at + 24, 1000)  # uncompressed size
    path.write_bytes(bytes(data))
    dest = tmp_path / "out"
    err = refused("too_large", extract_archive, path, dest)
    assert err.member == "liar.bin"
    assert_nothing_left(dest)  # first.txt was written, then removed


def test_truncated_tar_member_is_refused(tmp_path):
    path = make_tar(
        tmp_path / "b.tar",
        [tar_info("ok.txt", b"ok"), tar_info("big.bin", os.urandom(5000))],
        "w",
    )
    path.write_bytes(path.read_bytes()[:3000])
    refused("not_an_archive", extract_archive, path, tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_a6_tar_pax_header_bomb_is_refused_without_reading_it(tmp_path):
    info, _ = tar_info("a.txt")
    # 17 MiB stays under the stream's position cap, so only the per-read cap (16 MiB)
    # stands between tarfile and reading the whole header into memory.
    info.pax_headers = {"comment": "a" * (17 << 20)}
    archive = make_tar(tmp_path / "b.tgz", [(info, io.BytesIO(b""))])
    refused("too_large", extract_archive, archive, tmp_path / "out")


@pytest.mark.parametrize("payload", [b"\x00" * 600, gzip.compress(b"not a tar" * 100)])
def test_non_archives_are_refused(tmp_path, payload):
    (tmp_path / "x.zip").write_bytes(payload)
    refused("not_an_archive", extract_archive, tmp_path / "x.zip", tmp_path / "out")
    assert_nothing_left(tmp_path / "out")


def test_refusal_leaves_existing_empty_dest_empty_and_busy_dest_is_an_error(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    archive = make_zip(tmp_path / "b.zip", [("a/ok.txt", b"ok"), ("../x", b"x")])
    refused("unsafe_path", extract_archive, archive, dest)
    assert dest.is_dir() and not any(dest.iterdir())
    (dest / "old").write_text("x")
    with pytest.raises(FileExistsError):
        extract_archive(make_zip(tmp_path / "c.zip", [("a", b"a")]), dest)


# ------------------------------------------------------------- materialise


def test_materialise_single_onnx_becomes_model_onnx(tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(generic_model().SerializeToString())
    root = materialise_bundle(upload, tmp_path / "out")
    assert root == tmp_path / "out"
    assert (root / "model.onnx").read_bytes() == upload.read_bytes()
    assert inspect_bundle(root).kind == "generic"


def test_materialise_zip_with_single_top_folder_uses_it_as_root(
    tmp_path, tokenizer_json
):
    archive = make_zip(
        tmp_path / "up.onnx",
        [  # named .onnx: sniffed, not trusted
            ("tiny/model.onnx", lm_model().SerializeToString()),
            ("tiny/tokenizer.json", tokenizer_json.encode()),
        ],
    )
    root = materialise_bundle(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "tiny"
    assert inspect_bundle(root).kind == "causal_lm_kv"


def test_materialise_prefers_model_onnx_then_merged_then_decoder(
    tmp_path, tokenizer_json
):
    model = lm_model(merged=True).SerializeToString()
    archive = make_tar(
        tmp_path / "up.tgz",
        [
            tar_info("decoder_model.onnx", model),
            tar_info("decoder_model_merged.onnx", model),
            tar_info("tokenizer.json", tokenizer_json.encode()),
        ],
    )
    facts = inspect_bundle(materialise_bundle(archive, tmp_path / "out"))
    assert facts.model_file == "decoder_model_merged.onnx"
    assert facts.layout == "optimum_merged"


def test_materialise_without_model_names_what_it_found_and_cleans_up(tmp_path):
    archive = make_zip(
        tmp_path / "up.zip", [("onnx/model_q4.onnx", b"m"), ("weights.bin", b"w")]
    )
    err = refused("missing_model", materialise_bundle, archive, tmp_path / "out")
    assert "onnx/model_q4.onnx" in str(err) and "weights.bin" in str(err)
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"w": [1, 2]}, protocol=4),
        b"<!DOCTYPE html><html><body>login</body></html>",
        b'{"model": "not onnx"}',
    ],
)
def test_a7_materialise_refuses_pickle_html_json_without_writing(tmp_path, payload):
    (tmp_path / "model.onnx").write_bytes(payload)
    err = refused(
        "invalid_onnx", materialise_bundle, tmp_path / "model.onnx", tmp_path / "out"
    )
    assert "looks like" in str(err)
    assert_nothing_left(tmp_path / "out")


# --------------------------------------------------------- invalid models


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"PK\x03\x04" + b"\x00" * 100, "ZIP"),
        (pickle.dumps(np.zeros(3), protocol=2), "pickle"),
        (b"\n  <html><head></head></html>", "HTML"),
        (b"\xff" * 64, "does not parse"),
        (b"", "no ONNX graph"),
    ],
)
def test_a7_model_file_that_is_not_onnx_is_refused(bundle, payload, says):
    root = bundle(generic_model())
    (root / "model.onnx").write_bytes(payload)
    err = refused("invalid_onnx", inspect_bundle, root)
    assert says in str(err)


def test_b8_model_over_two_gib_is_refused_before_parsing(bundle):
    root = bundle(generic_model())
    with open(root / "model.onnx", "r+b") as f:
        f.truncate(2**31 + 1)  # sparse: no disk used
    assert "2 GiB" in str(refused("invalid_onnx", inspect_bundle, root))


def test_checker_failure_is_invalid_onnx(bundle):
    model = make(
        [helper.make_node("Relu", ["nowhere"], ["y"])],
        [vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
    )
    assert "checker" in str(refused("invalid_onnx", inspect_bundle, bundle(model)))


def test_unknown_standard_op_fails_the_checker(bundle):
    model = make(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        [vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
    )
    refused("invalid_onnx", inspect_bundle, bundle(model))


def test_symlinked_model_file_is_refused(bundle, tmp_path):
    real = tmp_path / "elsewhere.onnx"
    real.write_bytes(generic_model().SerializeToString())
    root = bundle(generic_model())
    (root / "model.onnx").unlink()
    (root / "model.onnx").symlink_to(real)
    refused("link_member", inspect_bundle, root)


# ---------------------------------------------------------- graph safety


def xy_model(nodes, opsets=OPSET, functions=()):
    return make(
        nodes,
        [vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
        opsets=opsets,
        functions=functions,
    )


def test_custom_domain_op_at_top_level_is_refused(bundle):
    model = xy_model(
        [helper.make_node("Pwn", ["x"], ["y"], domain="evil.ops")],
        [*OPSET, helper.make_opsetid("evil.ops", 1)],
    )
    err = refused("op_not_allowed", inspect_bundle, bundle(model))
    assert "evil.ops" in str(err)


def test_custom_domain_op_without_opset_import_is_refused_by_name(bundle):
    model = xy_model([helper.make_node("Pwn", ["x"], ["y"], domain="evil.ops")])
    err = refused("op_not_allowed", inspect_bundle, bundle(model))
    assert "evil.ops::Pwn" in str(err)


def if_node(branch_nodes, out="y"):
    branch = helper.make_graph(
        branch_nodes, "b", [], [vi("b_out", TensorProto.FLOAT, [1])]
    )
    return helper.make_node(
        "If", ["cond"], [out], then_branch=branch, else_branch=branch
    )


def test_custom_domain_op_inside_if_subgraph_is_refused(bundle):
    model = make(
        [if_node([helper.make_node("Pwn", ["x"], ["b_out"], domain="evil")])],
        [vi("cond", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
    )
    assert "evil::Pwn" in str(refused("op_not_allowed", inspect_bundle, bundle(model)))


def test_custom_domain_op_inside_function_is_refused(bundle):
    fn = helper.make_function(
        "com.microsoft",
        "Wrap",
        ["a"],
        ["b"],
        [helper.make_node("Pwn", ["a"], ["b"], domain="evil")],
        MS_OPSET,
    )
    model = xy_model(
        [helper.make_node("Wrap", ["x"], ["y"], domain="com.microsoft")], MS_OPSET, [fn]
    )
    refused("op_not_allowed", inspect_bundle, bundle(model))


def nested_if_model(levels):
    """If inside If, `levels` deep; valid for the checker."""
    body = [helper.make_node("Identity", ["x"], [f"o{levels}"])]
    for level in range(levels - 1, -1, -1):
        branch = helper.make_graph(
            body, f"b{level}", [], [vi(f"o{level + 1}", TensorProto.FLOAT, [1])]
        )
        body = [
            helper.make_node(
                "If", ["cond"], [f"o{level}"], then_branch=branch, else_branch=branch
            )
        ]
    return make(
        body,
        [vi("cond", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [1])],
        [vi("o0", TensorProto.FLOAT, [1])],
    )


def test_b7_subgraph_nesting_is_capped(bundle):
    root = bundle(nested_if_model(3))
    assert inspect_bundle(root, limits=Limits(max_graph_depth=3)).kind == "generic"
    err = refused(
        "graph_too_large", inspect_bundle, root, limits=Limits(max_graph_depth=2)
    )
    assert "nest" in str(err)


def chain_functions(length, calls_per_level=1, leaf_nodes=1):
    """f0 holds Identity nodes; f(i) calls f(i-1) `calls_per_level` times."""
    fns = [
        helper.make_function(
            "com.microsoft",
            "f0",
            ["a"],
            ["b"],
            [
                helper.make_node(
                    "Identity", ["a"], ["b" if i == leaf_nodes - 1 else f"t{i}"]
                )
                for i in range(leaf_nodes)
            ],
            OPSET,
        )
    ]
    for level in range(1, length):
        calls = [
            helper.make_node(
                f"f{level - 1}",
                ["a"],
                ["b" if i == 0 else f"u{i}"],
                domain="com.microsoft",
            )
            for i in range(calls_per_level)
        ]
        fns.append(
            helper.make_function(
                "com.microsoft", f"f{level}", ["a"], ["b"], calls, MS_OPSET
            )
        )
    return fns


def test_b7_function_nesting_is_capped(bundle):
    fns = chain_functions(12)
    model = xy_model(
        [helper.make_node("f11", ["x"], ["y"], domain="com.microsoft")], MS_OPSET, fns
    )
    refused("graph_too_large", inspect_bundle, bundle(model))


def test_b7_mutually_recursive_functions_are_refused(bundle):
    ping, pong = (
        helper.make_function(
            "com.microsoft",
            name,
            ["a"],
            ["b"],
            [helper.make_node(other, ["a"], ["b"], domain="com.microsoft")],
            MS_OPSET,
        )
        for name, other in (("Ping", "Pong"), ("Pong", "Ping"))
    )
    model = xy_model(
        [helper.make_node("Ping", ["x"], ["y"], domain="com.microsoft")],
        MS_OPSET,
        [ping, pong],
    )
    assert "itself" in str(refused("graph_too_large", inspect_bundle, bundle(model)))


def test_uncalled_function_is_still_checked(bundle):
    fn = helper.make_function(
        "com.microsoft",
        "Unused",
        ["a"],
        ["b"],
        [helper.make_node("Pwn", ["a"], ["b"], domain="evil")],
        MS_OPSET,
    )
    model = xy_model([helper.make_node("Identity", ["x"], ["y"])], MS_OPSET, [fn])
    refused("op_not_allowed", inspect_bundle, bundle(model))


def test_b7_recursive_function_is_refused(bundle):
    fn = helper.make_function(
        "com.microsoft",
        "Again",
        ["a"],
        ["b"],
        [helper.make_node("Again", ["a"], ["b"], domain="com.microsoft")],
        MS_OPSET,
    )
    model = xy_model(
        [helper.make_node("Again", ["x"], ["y"], domain="com.microsoft")],
        MS_OPSET,
        [fn],
    )
    assert "itself" in str(refused("graph_too_large", inspect_bundle, bundle(model)))


def test_b7_node_cap_counts_plain_nodes(bundle):
    nodes = [
        helper.make_node(
            "Identity", ["x" if i == 0 else f"t{i}"], ["y" if i == 9 else f"t{i + 1}"]
        )
        for i in range(10)
    ]
    root = bundle(xy_model(nodes))
    assert inspect_bundle(root, limits=Limits(max_nodes=10)).kind == "generic"
    refused("graph_too_large", inspect_bundle, root, limits=Limits(max_nodes=9))


def test_b7_node_cap_counts_functions_as_inlined(bundle):
    # 10 written nodes: one call to f2, which calls f1 three times, which calls f0
    # (three Identity nodes) three times. Counting every call site with its body:
    # 1 + 3 * (1 + 3 * (1 + 3)) = 40.
    fns = chain_functions(3, calls_per_level=3, leaf_nodes=3)
    model = xy_model(
        [helper.make_node("f2", ["x"], ["y"], domain="com.microsoft")], MS_OPSET, fns
    )
    root = bundle(model)
    refused("graph_too_large", inspect_bundle, root, limits=Limits(max_nodes=39))
    assert inspect_bundle(root, limits=Limits(max_nodes=40)).kind == "generic"


# ---------------------------------------------------------- external data


def test_valid_external_data_is_accepted(bundle):
    root = bundle(generic_model(), external="weights.bin")
    facts = inspect_bundle(root)
    assert facts.external_files == ["weights.bin"]
    assert facts.parameter_count == 15 and facts.weight_bytes == 60


@pytest.fixture
def touched(monkeypatch):
    """Record every path opened or stat-ed through os / builtins while active."""
    paths: list[str] = []

    def spy(real):
        def wrapper(path, *args, **kwargs):
            if isinstance(path, str | os.PathLike):
                paths.append(os.path.normpath(os.fspath(path)))
            return real(path, *args, **kwargs)

        return wrapper

    for owner, name in [(builtins, "open"), (os, "open"), (os, "stat"), (os, "lstat")]:
        monkeypatch.setattr(owner, name, spy(getattr(owner, name)))
    return paths


def assert_only_touched_inside(paths, root: Path):
    """realpath() may lstat the root's ancestors; nothing else outside is allowed."""
    assert paths  # the spy saw the model being read
    for path in paths:
        assert (
            path.startswith(f"{root}/")
            or path == str(root)
            or (str(root).startswith(f"{path}/") or path == "/")
        ), f"touched {path} outside {root}"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../../etc/passwd", "'..'"),
        ("/etc/passwd", "absolute"),
        ("sub/../../x", "'..'"),
        ("*/_ORT_MEM_ADDR_/*", "process memory"),
        ("C:\\x", "backslash"),
        ("C:/x", "absolute"),
        ("", "empty"),
        ("nowhere.bin", "does not exist"),
    ],
)
def test_b1_external_location_outside_or_missing_is_refused(
    bundle, touched, location, reason
):
    root = bundle(
        forge_external(generic_model(), "W", location), files={"weights.bin": bytes(48)}
    )
    touched.clear()
    err = refused("external_data_outside", inspect_bundle, root)
    assert err.member == "W" and reason in str(err)
    assert_only_touched_inside(touched, root)


def test_b1_external_symlink_to_etc_passwd_is_refused_without_opening_it(
    bundle, touched
):
    root = bundle(forge_external(generic_model(), "W", "weights.bin"))
    (root / "weights.bin").symlink_to("/etc/passwd")
    touched.clear()
    err = refused("external_data_outside", inspect_bundle, root)
    assert "symbolic link" in str(err)
    assert_only_touched_inside(touched, root)


def test_b1_external_path_through_symlinked_directory_is_refused(bundle, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(b"\x00" * 48)
    root = bundle(forge_external(generic_model(), "W", "sub/w.bin"))
    (root / "sub").symlink_to(tmp_path / "outside")
    err = refused("external_data_outside", inspect_bundle, root)
    assert "symbolic link" in str(err)


def test_b1_external_hard_link_is_refused(bundle, tmp_path):
    root = bundle(generic_model(), external="weights.bin")
    os.link(root / "weights.bin", tmp_path / "second-name")
    assert "hard link" in str(refused("external_data_outside", inspect_bundle, root))


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 4096), (40, 48), ("-1", 48), ("abc", 48), (0, "-48")]
)
def test_b2_external_range_outside_file_or_malformed_is_refused(bundle, offset, length):
    model = forge_external(
        generic_model(), "W", "weights.bin", offset=offset, length=length
    )
    refused(
        "external_data_range",
        inspect_bundle,
        bundle(model, files={"weights.bin": bytes(64)}),
    )


def test_b2_external_length_must_match_declared_size(bundle):
    model = forge_external(generic_model(), "W", "weights.bin", length=40)
    refused(
        "tensor_too_large",
        inspect_bundle,
        bundle(model, files={"weights.bin": bytes(64)}),
    )


def test_overlapping_external_ranges_beyond_bundle_bytes_are_refused(bundle):
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["y"]),
    ]
    model = make(
        nodes,
        [vi("x", TensorProto.FLOAT, [1, 256])],
        [vi("y", TensorProto.FLOAT, [1, 256])],
        [weight("W1", [256, 256]), weight("W2", [256, 256])],
    )
    for name in ("W1", "W2"):
        forge_external(model, name, "weights.bin")
    root = bundle(model, files={"weights.bin": bytes(256 * 256 * 4)})
    assert "overlap" in str(refused("tensor_too_large", inspect_bundle, root))


# ---------------------------------------------------------- tensor accounting


def forged(dims, dtype=TensorProto.FLOAT, raw=None, floats=()):
    """A TensorProto built field by field, since onnx.helper refuses lies."""
    t = TensorProto(name="T", data_type=dtype, dims=dims, float_data=floats)
    if raw is not None:
        t.raw_data = raw
    return t


def tensor_model(tensor):
    return make(
        [helper.make_node("Add", ["x", tensor.name], ["y"])],
        [vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
        [tensor],
    )


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        (forged([2**62, 8], raw=bytes(8)), "2**40"),
        (forged([2**20, 2**21], raw=bytes(8)), "2**40"),
        (forged([-1, 4], raw=bytes(8)), "negative"),
        (forged([1000], raw=bytes(16)), "16 raw bytes"),
        (forged([4], floats=[1.0, 2.0, 3.0]), "holds 3 values"),
        (forged([2], TensorProto.INT64), "holds 0 values"),
    ],
    ids=["2^62x8", "over-2^40", "negative", "raw-short", "typed-short", "no-data"],
)
def test_b3_tensor_dims_and_data_must_agree(bundle, tensor, reason):
    err = refused("tensor_too_large", inspect_bundle, bundle(tensor_model(tensor)))
    assert reason in str(err)


def test_b3_constant_node_tensor_is_accounted_too(bundle):
    huge = forged([2**62, 8], raw=bytes(8))
    model = xy_model(
        [
            helper.make_node("Constant", [], ["c"], value=huge),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    )
    assert "2**40" in str(refused("tensor_too_large", inspect_bundle, bundle(model)))


def test_b3_huge_dims_with_external_data_are_refused_before_any_range_check(bundle):
    model = tensor_model(forged([2**62, 8], raw=bytes(8)))
    forge_external(model, "T", "weights.bin", length=8)
    root = bundle(model, files={"weights.bin": bytes(8)})
    assert "2**40" in str(refused("tensor_too_large", inspect_bundle, root))


# ---------------------------------------------------------- kinds and layouts


@pytest.mark.parametrize(
    ("kwargs", "files", "kind", "layout", "layers"),
    [
        ({}, {}, "causal_lm_kv", "optimum", 2),
        ({"layers": 3, "merged": True}, {}, "causal_lm_kv", "optimum_merged", 3),
        ({}, {"genai_config.json": b"{}"}, "causal_lm_kv", "genai", 2),
        ({"gqa": True}, {}, "causal_lm_kv", "genai", 2),
        ({"layers": 0}, {}, "causal_lm", "plain", None),
        ({"layers": 0, "logits_rank": 2}, {}, "seq_classifier", "classifier", None),
    ],
)
def test_kind_and_layout_detection(bundle, kwargs, files, kind, layout, layers):
    facts = inspect_bundle(bundle(lm_model(**kwargs), files=files))
    assert (facts.kind, facts.layout, facts.num_layers) == (kind, layout, layers)
    assert facts.has_tokenizer and facts.has_genai_config == bool(files)


def test_generic_float_model_needs_no_tokenizer(bundle):
    facts = inspect_bundle(bundle(generic_model(), tokenizer=False))
    assert (facts.kind, facts.layout, facts.num_layers) == ("generic", "tensor", None)
    assert not facts.has_tokenizer


@pytest.mark.parametrize("kwargs", [{}, {"layers": 0}, {"layers": 0, "logits_rank": 2}])
def test_language_models_require_tokenizer(bundle, kwargs):
    refused(
        "missing_tokenizer", inspect_bundle, bundle(lm_model(**kwargs), tokenizer=False)
    )


def test_symlinked_tokenizer_does_not_count(bundle, tmp_path, tokenizer_json):
    (tmp_path / "tok.json").write_text(tokenizer_json)
    root = bundle(lm_model(), tokenizer=False)
    (root / "tokenizer.json").symlink_to(tmp_path / "tok.json")
    refused("missing_tokenizer", inspect_bundle, root)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"layers": 0, "logits": "scores"}, "no 'logits' output"),
        ({"layers": 0, "logits_rank": 4}, "rank 3"),
    ],
)
def test_unrecognised_signatures_are_refused(bundle, kwargs, expected):
    err = refused("unsupported_model", inspect_bundle, bundle(lm_model(**kwargs)))
    assert expected in str(err)


# ---------------------------------------------------------- facts


def test_facts_report_exact_parameters_signature_and_serialise(bundle):
    facts = inspect_bundle(bundle(lm_model(), files={"config.json": b"{}"}))
    assert facts.parameter_count == VOCAB * HIDDEN + HIDDEN * VOCAB
    assert facts.weight_bytes == 4 * facts.parameter_count
    assert facts.opsets == {"ai.onnx": 17} and facts.ir_version > 0
    assert facts.quantisation == "fp32" and facts.has_config
    ids = facts.inputs[0]
    assert (ids.name, ids.dtype, ids.shape) == ("input_ids", "int64", ["batch", "seq"])
    assert facts.outputs[0].shape == ["batch", "seq", VOCAB]
    assert json.loads(json.dumps(facts.to_dict()))["inputs"][2]["name"] == (
        "past_key_values.0.key"
    )


def repeated_weights_model(*, typed=False):
    """x [1, 64] through A, a copy of A, two zero matrices and a random B.

    ``typed`` stores A and its copy in ``float_data`` instead of ``raw_data``.
    """
    a = weight("A", [64, 64])
    values = numpy_helper.to_array(a)
    if typed:
        a = helper.make_tensor("A", TensorProto.FLOAT, [64, 64], values.ravel())
    a_copy = (
        helper.make_tensor("A_copy", TensorProto.FLOAT, [64, 64], values.ravel())
        if typed
        else numpy_helper.from_array(values, "A_copy")
    )
    zeros = [
        numpy_helper.from_array(np.zeros([64, 64], np.float32), name)
        for name in ("Z1", "Z2")
    ]
    names = ["A", "A_copy", "Z1", "Z2", "B"]
    nodes = [
        helper.make_node("MatMul", [src, w], [dst])
        for src, w, dst in zip(
            ["float_input", "h0", "h1", "h2", "h3"],
            names,
            ["h0", "h1", "h2", "h3", "y"],
            strict=True,
        )
    ]
    inits = [a, a_copy, *zeros, weight("B", [64, 64])]
    return make(
        nodes,
        [vi("float_input", TensorProto.FLOAT, [1, 64])],
        [vi("y", TensorProto.FLOAT, [1, 64])],
        inits,
    )


@pytest.mark.parametrize(
    ("typed", "external"), [(False, None), (True, None), (False, "weights.bin")]
)
def test_identical_matrices_count_once_but_one_valued_ones_do_not(
    bundle, typed, external
):
    model = repeated_weights_model(typed=typed)
    assert model.graph.initializer[0].HasField("raw_data") is not typed
    facts = inspect_bundle(bundle(model, tokenizer=False, external=external))
    assert facts.shared_initializers == [["A", "A_copy"]]
    assert facts.parameter_count == 4 * 64 * 64  # A_copy left out, Z1 and Z2 kept
    assert facts.weight_bytes == 4 * 5 * 64 * 64  # as stored


def quant_model(nodes, inits, opsets=OPSET, in_dtype=TensorProto.FLOAT):
    return make(
        nodes,
        [vi("float_input", in_dtype, [1, 64])],
        [vi("y", in_dtype, [1, 32])],
        inits,
        opsets,
    )


def test_quantisation_fp16(bundle):
    model = quant_model(
        [helper.make_node("MatMul", ["float_input", "W"], ["y"])],
        [weight("W", [64, 32], np.float16)],
        in_dtype=TensorProto.FLOAT16,
    )
    assert inspect_bundle(bundle(model)).quantisation == "fp16"


def test_quantisation_mixed_fp16_and_fp32(bundle):
    nodes = [
        helper.make_node("MatMul", ["float_input", "W32"], ["h"]),
        helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["h16", "W16"], ["y16"]),
        helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
    ]
    model = quant_model(
        nodes, [weight("W32", [64, 64]), weight("W16", [64, 32], np.float16)]
    )
    assert inspect_bundle(bundle(model)).quantisation == "mixed"


def test_quantisation_int8_from_dequantize_linear(bundle):
    w = numpy_helper.from_array(RNG.integers(-127, 127, (64, 32)).astype(np.int8), "Wq")
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "scale", "zp"], ["W"]),
        helper.make_node("MatMul", ["float_input", "W"], ["y"]),
    ]
    inits = [
        w,
        helper.make_tensor("scale", TensorProto.FLOAT, [], [0.01]),
        helper.make_tensor("zp", TensorProto.INT8, [], [0]),
    ]
    facts = inspect_bundle(bundle(quant_model(nodes, inits)))
    assert facts.quantisation == "int8" and facts.parameter_count == 64 * 32 + 2


def test_quantisation_int4_matmulnbits_counts_logical_weights(bundle):
    k, n, block = 64, 32, 32
    packed = numpy_helper.from_array(
        RNG.integers(0, 255, (n, k // block, block // 2)).astype(np.uint8), "Bq"
    )
    scales = weight("scales", [n * k // block])
    node = helper.make_node(
        "MatMulNBits",
        ["float_input", "Bq", "scales"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=block,
    )
    facts = inspect_bundle(bundle(quant_model([node], [packed, scales], MS_OPSET)))
    assert facts.quantisation == "int4"
    assert facts.parameter_count == k * n + n * k // block
    assert facts.weight_bytes == n * k // 2 + 4 * n * k // block


@pytest.mark.parametrize(
    "op", ["BeamSearch", "Sampling", "Tokenizer", "CDist", "MoE", "NoSuchKernel"]
)
def test_b6_com_microsoft_op_off_the_allowlist_is_refused(bundle, op):
    model = xy_model(
        [helper.make_node(op, ["x"], ["y"], domain="com.microsoft")], MS_OPSET
    )
    err = refused("op_not_allowed", inspect_bundle, bundle(model))
    assert f"com.microsoft::{op}" in str(err)


def test_b6_com_microsoft_op_off_the_allowlist_is_refused_inside_a_subgraph(bundle):
    model = make(
        [if_node([helper.make_node("Inverse", [], ["b_out"], domain="com.microsoft")])],
        [vi("cond", TensorProto.BOOL, []), vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
        opsets=MS_OPSET,
    )
    assert "Inverse" in str(refused("op_not_allowed", inspect_bundle, bundle(model)))


@pytest.mark.parametrize(
    "op",
    [
        "GroupQueryAttention",
        "MatMulNBits",
        "RotaryEmbedding",
        "SkipSimplifiedLayerNormalization",
        "SimplifiedLayerNormalization",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "FusedMatMul",
    ],
)
def test_b6_allowlisted_com_microsoft_op_passes_the_gate(bundle, op):
    model = xy_model(
        [helper.make_node(op, ["x"], ["y"], domain="com.microsoft")], MS_OPSET
    )
    assert inspect_bundle(bundle(model)).opsets["com.microsoft"] == 1


def test_b6_local_function_named_like_a_refused_kernel_is_refused(bundle):
    # ONNX Runtime would run its BeamSearch kernel, not this harmless body.
    fn = helper.make_function(
        "com.microsoft",
        "BeamSearch",
        ["a"],
        ["b"],
        [helper.make_node("Identity", ["a"], ["b"])],
        MS_OPSET,
    )
    node = helper.make_node("BeamSearch", ["x"], ["y"], domain="com.microsoft")
    err = refused(
        "op_not_allowed", inspect_bundle, bundle(xy_model([node], MS_OPSET, [fn]))
    )
    assert "BeamSearch" in str(err)


def test_b6_ops_the_genai_builder_and_quantiser_emit_are_all_allowed(tmp_path):
    """The fixtures' com.microsoft ops and quantize_dynamic's output pass the gate."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from engine.bundle import _MS_ALLOWED_OPS

    families = Path(__file__).resolve().parents[1] / "fixtures" / "families"
    seen = set()
    for path in families.glob("*/model.onnx"):
        model = onnx.load(path, load_external_data=False)
        seen |= {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    source = families / "llama" / "model.onnx"
    quantize_dynamic(source, tmp_path / "q.onnx", weight_type=QuantType.QInt8)
    quantised = onnx.load(tmp_path / "q.onnx", load_external_data=False)
    seen |= {n.op_type for n in quantised.graph.node if n.domain == "com.microsoft"}
    assert seen <= _MS_ALLOWED_OPS
