"""The layer-file format alone (no Chroma): any records survive write → read bit-for-bit, and
the encrypted stream refuses any change. Hypothesis explores texts, metadata and vectors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osprag.errors import BackupInvalid
from osprag.ops.archive import DecryptingReader, EncryptingWriter
from osprag.ops.transfer import LayerFile, _line, encode_vector

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
records = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=20),
        st.text(max_size=200),
        st.dictionaries(st.text(min_size=1, max_size=10), scalars, max_size=5),
        st.lists(
            st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=4, max_size=4
        ),
    ),
    max_size=30,
    unique_by=lambda r: r[0],
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records)
def test_layer_file_round_trip(
    tmp_path: Path, recs: list[tuple[str, str, dict[str, Any], list[float]]]
) -> None:
    path = tmp_path / "f.jsonl"
    with open(path, "wb") as fh:
        fh.write(
            _line(
                {
                    "type": "header",
                    "format": "osprag-export",
                    "version": 1,
                    "layer": "kern",
                    "identity": None,
                    "count": len(recs),
                }
            )
        )
        for rid, doc, meta, vec in recs:
            fh.write(
                _line(
                    {
                        "type": "chunk",
                        "id": rid,
                        "document": doc,
                        "metadata": meta,
                        "embedding": encode_vector(vec),
                    }
                )
            )
        fh.write(_line({"type": "trailer", "chunks": len(recs), "documents": 0}))
    lf = LayerFile(path).scan()
    got = [
        (rid, doc, meta, vec)
        for b in lf.batches(size=7)
        for rid, doc, meta, vec in zip(b.ids, b.documents, b.metadatas, b.embeddings, strict=True)
    ]
    assert [(r, d, json.dumps(m, sort_keys=True)) for r, d, m, _ in got] == [
        (r, d, json.dumps(m, sort_keys=True)) for r, d, m, _ in recs
    ]
    for (_, _, _, want), (_, _, _, vec) in zip(recs, got, strict=True):
        assert vec.tobytes() == np.asarray(want, dtype="<f4").tobytes()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3_000_000), st.integers(min_value=0, max_value=10_000))
def test_encrypted_stream_round_trip_and_tamper(data: bytes, where: int) -> None:
    key = os.urandom(32)
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key)
    writer.write(data)
    writer.close()
    sealed = sink.getvalue()
    assert io.BufferedReader(DecryptingReader(io.BytesIO(sealed), key)).read() == data
    tampered = bytearray(sealed)
    tampered[16 + where % (len(sealed) - 16)] ^= 0x40
    with pytest.raises(BackupInvalid):
        io.BufferedReader(DecryptingReader(io.BytesIO(bytes(tampered)), key)).read()
    with pytest.raises(BackupInvalid, match="truncated"):
        io.BufferedReader(DecryptingReader(io.BytesIO(sealed[:-1]), key)).read()
