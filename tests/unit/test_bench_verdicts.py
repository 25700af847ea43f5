"""bench/serving.py's verdict lines say what the issue's targets ask, against both baselines."""

from __future__ import annotations

from bench.serving import Throughput, verdicts


def row(rate: float, **extra: object) -> Throughput:
    return Throughput("x", "/s", rate, 1.0, 1, None, None, dict(extra))


def test_first_token_verdict_names_raw_llama_cpp_on_the_same_q8_0_file_and_embeddings_name_raw_encode() -> None:
    results = {
        "embed_raw": row(200.0),
        "embed_runner": row(180.0),
        "embed_http": row(90.0),
        "embed_http_patterns": row(100.0),
        "generate_raw": row(10.0),
        "chat_8": row(40.0),
        "seq_embed_http": row(1.0, overhead_ms=5.0),
        "seq_chat_http": row(1.0, overhead_ms=5.0),
        "llamacpp_raw": row(43.0, first_token_p50_ms=138.0),
        "llamacpp_raw_q8": row(47.0, first_token_p50_ms=90.0),
        "llamacpp_1": row(55.0, first_token_p50_ms=89.0),
        "chat_http_1": row(60.0, first_text_seq_p50_ms=115.0),
        "chat_http_8": row(88.0),
    }
    lines = "\n".join(verdicts(results))
    assert "HTTP 0.83x (target <= 1.2x): met" in lines
    assert "same q8_0 re-encoding the engine runs (90.0 ms): HTTP 1.28x (target <= 1.2x): NOT met" in lines
    assert (
        "embeddings vs raw sentence-transformers encode (batches of 32): HTTP 45%, in-process batched runner 90%"
        in lines
    )
